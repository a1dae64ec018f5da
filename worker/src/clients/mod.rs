//! The provider clients executors buy through: [`aws`] (SDK clients per account and region,
//! with verified credentials, and the classification of SDK errors) and [`azure`] (Resource
//! Manager settings, credentials and REST calls).

pub mod aws;
pub mod azure;
