//! TODO
use twinwatch_common::sample::Metric;

use super::CollectError;

pub fn parse(_text: &str, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
    Ok(())
}
