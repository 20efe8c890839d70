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
