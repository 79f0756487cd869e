//! Ledger outcomes as responses: the one place the ledger's answers become wire messages —
//! for the caller ([`Respond`]) and, through the same conversion, for the idempotency record a
//! batch stores ([`encode`]), so a replay answers with the same bytes.

use prost::Message;

use super::convert;
use crate::{
    error::{Error, Result},
    proto,
    store::{idempotency, ledger::Outcome},
};

/// The response bytes an outcome's idempotency record stores (`ledger::Encode`): the
/// response [`Respond::fresh`] gives, encoded.
pub fn encode(outcome: &Outcome) -> Vec<u8> {
    fn bytes<R: Respond>(outcome: &Outcome) -> Vec<u8> {
        R::fresh(outcome)
            .map(|r| r.encode_to_vec())
            .unwrap_or_default()
    }
    match outcome {
        Outcome::Charged(_) => bytes::<proto::DebitResponse>(outcome),
        Outcome::Grant { .. } => bytes::<proto::Grant>(outcome),
        Outcome::Reservation(_) => bytes::<proto::Reservation>(outcome),
        Outcome::Entry(_) => bytes::<proto::Transaction>(outcome),
        Outcome::Schedule(_) => bytes::<proto::AllotmentSchedule>(outcome),
        Outcome::Wallet { .. } => bytes::<proto::Wallet>(outcome),
        Outcome::Swept => Vec::new(),
        Outcome::Replayed(response) => response.clone(),
    }
}

/// A response built from the outcome of the operation that asks for it.
pub trait Respond: Message + Default {
    /// The response to a fresh outcome (`None`: the outcome is not this method's).
    fn fresh(outcome: &Outcome) -> Option<Self>;

    /// The response to a replay (the stored bytes, decoded).
    fn replayed(response: &[u8]) -> Result<Self> {
        idempotency::decode(response)
    }

    fn respond(outcome: Outcome) -> Result<Self> {
        match outcome {
            Outcome::Replayed(response) => Self::replayed(&response),
            other => Self::fresh(&other).ok_or_else(|| {
                Error::internal(format!(
                    "ledger answered with an unexpected outcome: {other:?}"
                ))
            }),
        }
    }
}

impl Respond for proto::DebitResponse {
    fn fresh(outcome: &Outcome) -> Option<Self> {
        match outcome {
            Outcome::Charged(entry) => Some(proto::DebitResponse {
                transaction: Some(convert::transaction(entry)),
                replayed: false,
            }),
            _ => None,
        }
    }

    fn replayed(response: &[u8]) -> Result<Self> {
        let mut response: Self = idempotency::decode(response)?;
        response.replayed = true;
        Ok(response)
    }
}

/// `impl Respond` for a response built from one kind of outcome.
macro_rules! respond {
    ($response:ty, $pattern:pat => $build:expr) => {
        impl Respond for $response {
            fn fresh(outcome: &Outcome) -> Option<Self> {
                match outcome {
                    $pattern => Some($build),
                    _ => None,
                }
            }
        }
    };
}

respond!(proto::Grant, Outcome::Grant { row, now } => convert::grant(row, *now));
respond!(proto::Reservation, Outcome::Reservation(row) => convert::reservation(row));
respond!(proto::Transaction, Outcome::Entry(entry) => convert::transaction(entry));
respond!(proto::AllotmentSchedule, Outcome::Schedule(row) => convert::schedule(row));
respond!(
    proto::Wallet,
    Outcome::Wallet { row, balance } => convert::wallet(row, convert::balance(row, balance))
);
