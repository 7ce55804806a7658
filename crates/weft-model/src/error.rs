//! Field-level validation errors: every bad input names the object, the field and what
//! was expected, so a user can fix the manifest without reading code.

use std::fmt;

/// One problem with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// The object, as `Kind namespace/name` or `Kind name`.
    pub object: String,
    /// Dotted path of the offending field, e.g. `spec.subnets[1]` or
    /// `metadata.annotations["opencontrail.org/network"]`.
    pub field: String,
    /// What was expected there, in words.
    pub expected: String,
    /// The value that was found, if it is short enough to quote.
    pub found: Option<String>,
}

impl FieldError {
    /// Builds an error for `object`'s `field`, saying what was `expected`.
    pub fn new(object: impl Into<String>, field: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            object: object.into(),
            field: field.into(),
            expected: expected.into(),
            found: None,
        }
    }

    /// Adds the value that was found (quoted in the message).
    pub fn found(mut self, found: impl fmt::Display) -> Self {
        let mut text = found.to_string();
        if text.len() > 120 {
            // Cut on a character boundary: the value may be any UTF-8 (found by fuzzing).
            let cut = (0..=117).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.truncate(cut);
            text.push_str("...");
        }
        self.found = Some(text);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field {}: expected {}",
            self.object, self.field, self.expected
        )?;
        if let Some(found) = &self.found {
            write!(f, ", found {found:?}")?;
        }
        Ok(())
    }
}
