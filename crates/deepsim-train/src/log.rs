//! What one training step did, as one line of `metrics.jsonl` (serde_json both ways).

use std::collections::BTreeMap;

use deepsim_data::Position;
use serde::{Deserialize, Serialize};

/// What one step did: its position in the data, every loss term (unweighted), whether the
/// discriminator was updated, and the wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLog {
    /// The step just completed (from 1).
    pub step: u64,
    /// The batch it used.
    pub position: Position,
    /// `feat`, `img`, `adv`, `kl`, `discr` (those switched on), `adv_weight` (the adaptive
    /// adversarial weight, when the run has one) and `total` (the weighted sum the generator
    /// minimizes).
    pub terms: BTreeMap<String, f64>,
    /// Whether the discriminator was updated (the pause rule), when there is one.
    pub discriminator_updated: Option<bool>,
    /// Seconds the step took.
    pub seconds: f64,
}

/// The JSON object of one line: the step's position, every term under its own name, then
/// the discriminator's flag and the time (the order of the lines earlier versions wrote).
#[derive(Serialize, Deserialize)]
struct Line {
    step: u64,
    epoch: u64,
    batch: u64,
    #[serde(flatten)]
    terms: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d_updated: Option<bool>,
    seconds: f64,
}

impl StepLog {
    /// The step as one JSON line of `metrics.jsonl`:
    /// `{"step":…,"epoch":…,"batch":…,"<term>":…,…,"d_updated":…,"seconds":…}`.
    pub fn to_json(&self) -> String {
        let line = Line {
            step: self.step,
            epoch: self.position.epoch,
            batch: self.position.batch,
            d_updated: self.discriminator_updated,
            seconds: self.seconds,
            terms: self.terms.clone(),
        };
        // Integers, booleans and floats in a map with string keys: serde_json cannot fail on
        // them (a non-finite float, never logged since the step stops first, becomes null).
        serde_json::to_string(&line).expect("numbers under string keys always serialize")
    }

    /// Reads a line written by [`StepLog::to_json`].
    ///
    /// # Errors
    /// serde_json's message (with the column) for anything else: a truncated line, a missing
    /// `step`, a term that is not a number.
    pub fn from_json(line: &str) -> Result<Self, serde_json::Error> {
        let l: Line = serde_json::from_str(line)?;
        Ok(StepLog {
            step: l.step,
            position: Position { epoch: l.epoch, batch: l.batch },
            terms: l.terms,
            discriminator_updated: l.d_updated,
            seconds: l.seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let log = StepLog {
            step: 12,
            position: Position { epoch: 1, batch: 3 },
            terms: [("feat".to_string(), 1.25e-3), ("total".to_string(), 0.5)].into(),
            discriminator_updated: Some(false),
            seconds: 0.75,
        };
        let line = log.to_json();
        assert_eq!(
            line,
            r#"{"step":12,"epoch":1,"batch":3,"feat":0.00125,"total":0.5,"d_updated":false,"seconds":0.75}"#
        );
        assert_eq!(StepLog::from_json(&line).unwrap(), log);
        let no_d = StepLog { discriminator_updated: None, ..log };
        assert_eq!(StepLog::from_json(&no_d.to_json()).unwrap(), no_d);
    }

    #[test]
    fn lines_written_before_serde_still_read() {
        // As earlier versions wrote it by hand: terms in exponent notation.
        let old = r#"{"step":3,"epoch":0,"batch":2,"adv":6.9e-1,"total":1.5e0,"d_updated":true,"seconds":0.1234}"#;
        let log = StepLog::from_json(old).unwrap();
        assert_eq!((log.step, log.position.batch, log.discriminator_updated), (3, 2, Some(true)));
        assert_eq!(log.terms["adv"], 0.69);
        assert_eq!(log.terms.len(), 2);
    }

    #[test]
    fn damaged_lines_are_refused() {
        for bad in [
            r#"{"step":3,"epoch":0,"batch":2,"total":1.5,"secon"#,
            r#"{"epoch":0,"batch":2,"seconds":1}"#,
            r#"{"step":3,"epoch":0,"batch":2,"seconds":1,"total":"x"}"#,
            "",
        ] {
            assert!(StepLog::from_json(bad).is_err(), "{bad}");
        }
    }
}
