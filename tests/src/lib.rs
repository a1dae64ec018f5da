//! buyonce integration support: `fakecloud`, the local AWS + Azure commitment-purchase emulator
//! that every test of the project runs against.

pub mod fakecloud;
