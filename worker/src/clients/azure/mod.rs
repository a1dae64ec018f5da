//! Azure Resource Manager access for reservations (Microsoft.Capacity, api-version 2022-11-01):
//! [`settings`] from the environment, a [`credential`] for bearer tokens, the [`orders`] the
//! executor reads and the [`rest`] client with the four calls it makes.

pub mod credential;
pub mod orders;
pub mod rest;
pub mod settings;

pub use orders::{Order, OrderState, PutOutcome, Quote};
pub use rest::{AzureClient, API_VERSION};
pub use settings::{AzureSettings, CredentialKind};
