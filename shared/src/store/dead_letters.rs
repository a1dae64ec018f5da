use super::Store;
impl Store {}
