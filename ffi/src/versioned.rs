//! Reads that carry a version, for saves that merge.
//!
//! Every `get_*` returns the record with the version it was read at; every `update_*` takes the
//! record the form holds and that version back. The store applies the edit to the record as it
//! was at that version and merges it with what happened since, so a colleague's edits of other
//! fields, list items and text ranges, synced in while the form was open, survive the save.
//! Core's record structs are remote types to uniffi, so the pairs are small records here.
//!
//! The version is opaque text: the app keeps it beside the form and passes it back unchanged.

use liaison_core::model::{EngagementPlan, Interaction, KolProfile, MedicalInformationRequest, MedicalInsight};

/// A KOL profile and the version it was read at (pass it to `update_kol`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct KolRead {
    pub profile: KolProfile,
    pub version: String,
}

/// An interaction and the version it was read at (pass it to `update_interaction`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct InteractionRead {
    pub interaction: Interaction,
    pub version: String,
}

/// A medical insight and the version it was read at (pass it to `update_insight`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct InsightRead {
    pub insight: MedicalInsight,
    pub version: String,
}

/// A medical information request and the version it was read at (pass it to `update_request`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct RequestRead {
    pub request: MedicalInformationRequest,
    pub version: String,
}

/// An engagement plan and the version it was read at (pass it to `update_plan`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct PlanRead {
    pub plan: EngagementPlan,
    pub version: String,
}

/// A record as a live query of one record sees it (`watch_record`): its kind's read, with the
/// version to save against, or `Missing` (not on this device, or erased).
#[derive(Debug, Clone, uniffi::Enum)]
pub enum RecordValue {
    Kol { read: KolRead },
    Interaction { read: InteractionRead },
    Insight { read: InsightRead },
    Request { read: RequestRead },
    Plan { read: PlanRead },
    Missing,
}

impl RecordValue {
    /// Reads `id` as whatever kind it is; `Missing` if it cannot be read.
    pub(crate) fn read(store: &liaison_core::DocStore, id: &liaison_core::DocumentId) -> Self {
        use liaison_core::model::Kind;
        fn versioned<R: liaison_core::model::Record>(
            store: &liaison_core::DocStore,
            id: &liaison_core::DocumentId,
        ) -> Option<(R, String)> {
            store.get_versioned::<R>(id).ok().map(|(r, v)| (r, v.to_string()))
        }
        let value =
            match store.kind_of(id) {
                Ok(Some(Kind::KolProfile)) => {
                    versioned(store, id).map(|(profile, version)| Self::Kol { read: KolRead { profile, version } })
                }
                Ok(Some(Kind::Interaction)) => versioned(store, id)
                    .map(|(interaction, version)| Self::Interaction { read: InteractionRead { interaction, version } }),
                Ok(Some(Kind::MedicalInsight)) => versioned(store, id)
                    .map(|(insight, version)| Self::Insight { read: InsightRead { insight, version } }),
                Ok(Some(Kind::MedicalInformationRequest)) => versioned(store, id)
                    .map(|(request, version)| Self::Request { read: RequestRead { request, version } }),
                Ok(Some(Kind::EngagementPlan)) => {
                    versioned(store, id).map(|(plan, version)| Self::Plan { read: PlanRead { plan, version } })
                }
                Ok(None) | Err(_) => None,
            };
        value.unwrap_or(Self::Missing)
    }

    fn version(&self) -> Option<&str> {
        match self {
            Self::Kol { read } => Some(&read.version),
            Self::Interaction { read } => Some(&read.version),
            Self::Insight { read } => Some(&read.version),
            Self::Request { read } => Some(&read.version),
            Self::Plan { read } => Some(&read.version),
            Self::Missing => None,
        }
    }
}

/// Two reads are the same when they are of the same version (the version names the record's
/// whole state).
impl PartialEq for RecordValue {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.version() == other.version()
    }
}
