//! The execution document: the producer's input contract (DESIGN §8).
//!
//! Decoding is strict and two-staged. Serde rejects unknown fields, wrong types and unknown
//! enum values (the path of the offending field comes from `serde_path_to_error`); then
//! [`ExecutionDocument::validate`] checks what the type system cannot (which fields each service
//! needs, `count >= 1`, payment options per provider). Every error names its field path and what
//! was expected, so the submitting system's operator can act on it.
//!
//! Here: the document itself and its limits. Around it: the enums (`kinds.rs`), one
//! recommendation (`recommendation.rs`), the strict decoder (`decode.rs`), the checks after it
//! (`validate.rs`) and the errors both report (`error.rs`).

use serde::{Deserialize, Serialize};

use crate::ids::{ExecutionId, LineageKey, RecIndex};

mod decode;
mod error;
mod kinds;
mod recommendation;
mod validate;

pub(crate) use decode::decode_strict;
pub use error::{DocumentError, FieldError};
pub use kinds::{OfferingClass, Payment, PlanType, Provider, Service, Term};
pub use recommendation::Recommendation;

/// Largest execution document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Most recommendations in one execution.
pub const MAX_RECOMMENDATIONS: usize = RecIndex::MAX as usize + 1;

/// The approved execution as other systems submit it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExecutionDocument {
    pub execution_id: ExecutionId,
    /// Defaults to `execution_id`; keep it stable across retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<LineageKey>,
    pub approved_by: String,
    pub source: String,
    pub recommendations: Vec<Recommendation>,
}

impl ExecutionDocument {
    /// Decodes and validates a submitted document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DocumentError> {
        let doc: ExecutionDocument = decode_strict(bytes, MAX_DOCUMENT_BYTES)?;
        doc.validate()?;
        Ok(doc)
    }

    /// The lineage key: `idempotency_key`, or the execution ID when absent.
    pub fn lineage_key(&self) -> LineageKey {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| self.execution_id.clone().into())
    }

    /// The document with defaults made explicit: what is stored and compared when the same
    /// execution is submitted again (an omitted `idempotency_key` equals the execution ID).
    pub fn canonical(&self) -> ExecutionDocument {
        let mut doc = self.clone();
        doc.idempotency_key = Some(self.lineage_key());
        doc
    }
}

#[cfg(test)]
mod tests;
