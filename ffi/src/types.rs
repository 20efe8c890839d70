//! The model's records and enums as uniffi types. They are liaison-core's own types, declared to
//! uniffi as remote types, so there is no second copy to keep in step: a field added in core that
//! is not added here fails to compile.
//!
//! Collaborative text (`autosurgeon::Text`) crosses as a plain string. On update the store diffs
//! the new string against the text as it was at the version the form was read at, so a
//! whole-record update still merges per character with a colleague's concurrent edits (see
//! `LiaisonStore::update_*` and `versioned.rs`).
//!
//! **Names.** Where core's name would clash with a platform type that the same app file is
//! likely to import, the apps see another name (`#[uniffi(name)]`, one rename for every
//! language; core and Rust callers keep core's names): `Channel` is `InteractionChannel`
//! (kotlinx.coroutines' `Channel`), `Activity` is `PlanActivity` (Android's and ActivityKit's
//! `Activity`), `Signature` is `RequestSignature` (`java.security.Signature`), `Material` is
//! `InteractionMaterial` (SwiftUI's `Material`), `Role` is `UserRole` (Compose's semantics
//! `Role`) and `Text` is `SharedText` (SwiftUI's `Text`).
//!
//! **Defaults.** Every optional, list, text and flag field has a default, so an app names only
//! what it sets. uniffi's proc-macros cannot give an enum-typed field a default (the generators
//! accept only an enum literal, which only UDL can write), so the constructors that leave out a
//! new record's `status` (and a KOL's `privacy`) are hand-written in mobile-bindings: Kotlin
//! factory functions (`kotlin/src/main/.../Records.kt`) and Swift initialisers
//! (`swift/Sources/LiaisonCore/Records.swift`).

//!
//! **Forward compatibility.** Every enum a newer app may extend has an `Unknown` case (core's
//! `model::open_enum`): a value a newer app wrote reads as `Unknown`, and saving the record back
//! leaves that value stored. A new record or list item cannot be saved with it (`InvalidInput`);
//! pickers offer `known` (mobile-bindings `Known.kt`, `Known.swift`).

use autosurgeon::Text;
use liaison_core::Role;
use liaison_core::model::{
    Activity, Affiliation, Attendee, AttendeeKind, Channel, Consent, ContactPreferences, DeliveryMethod,
    EngagementPlan, FollowUp, Fulfilment, Interaction, KolProfile, Material, MedicalInformationRequest, MedicalInsight,
    PlanItem, PrivacyState, RecordStatus, RequestOrigin, Review, Signature, SocietyRole, Submission, TaskStatus, Topic,
    Unlock, Work, WorkKind,
};

/// Collaborative text, as the apps see it: `SharedText`, an alias of their string type. The name
/// is not `Text`, which would shadow SwiftUI's `Text` view in every file that imports both.
type SharedText = Text;

uniffi::custom_type!(SharedText, String, {
    remote,
    lower: |text| text.as_str().to_owned(),
    try_lift: |s| Ok(Text::with_value(s)),
});

#[uniffi::remote(Enum)]
/// What the signed-in user may do (core's `Role`).
#[uniffi(name = "UserRole")]
pub enum Role {
    Msl,
    Manager,
    MedicalInformation,
    Admin,
}

#[uniffi::remote(Enum)]
/// How an interaction took place (core's `Channel`).
#[uniffi(name = "InteractionChannel")]
pub enum Channel {
    InPerson,
    Phone,
    Video,
    Congress,
    Email,
    Unknown,
}

#[uniffi::remote(Enum)]
pub enum RecordStatus {
    Draft,
    Submitted,
}

#[uniffi::remote(Record)]
pub struct Submission {
    pub at: i64,
    pub user: String,
    pub device: String,
}

#[uniffi::remote(Record)]
pub struct Unlock {
    pub id: String,
    pub at: i64,
    pub user: String,
    pub reason: String,
}

#[uniffi::remote(Record)]
pub struct Affiliation {
    pub id: String,
    pub institution: String,
    #[uniffi(default)]
    pub department: Option<String>,
    #[uniffi(default)]
    pub title: Option<String>,
    #[uniffi(default)]
    pub primary: bool,
}

#[uniffi::remote(Record)]
pub struct SocietyRole {
    pub id: String,
    pub society: String,
    pub role: String,
}

#[uniffi::remote(Enum)]
pub enum WorkKind {
    Publication,
    Trial,
    Speaking,
    Unknown,
}

#[uniffi::remote(Record)]
pub struct Work {
    pub id: String,
    pub kind: WorkKind,
    pub title: String,
    #[uniffi(default)]
    pub year: Option<i64>,
    #[uniffi(default)]
    pub reference: Option<String>,
}

#[uniffi::remote(Record)]
pub struct ContactPreferences {
    #[uniffi(default)]
    pub do_not_contact: bool,
    #[uniffi(default)]
    pub best_times: Option<String>,
    #[uniffi(default)]
    pub preferred_channel: Option<Channel>,
}

#[uniffi::remote(Record)]
pub struct Consent {
    pub id: String,
    pub channel: Channel,
    pub scope: String,
    pub captured_at: i64,
    #[uniffi(default)]
    pub expires_at: Option<i64>,
}

#[uniffi::remote(Enum)]
pub enum PrivacyState {
    Active,
    OptedOut,
    Anonymised,
    Unknown,
}

#[uniffi::remote(Record)]
pub struct KolProfile {
    #[uniffi(default)]
    pub master_id: Option<String>,
    pub name: String,
    #[uniffi(default)]
    pub name_kana: Option<String>,
    pub institution: String,
    #[uniffi(default)]
    pub department: Option<String>,
    #[uniffi(default)]
    pub title: Option<String>,
    #[uniffi(default)]
    pub specialty: Option<String>,
    #[uniffi(default)]
    pub therapeutic_areas: Vec<String>,
    #[uniffi(default)]
    pub tier: Option<String>,
    #[uniffi(default)]
    pub affiliations: Vec<Affiliation>,
    #[uniffi(default)]
    pub society_roles: Vec<SocietyRole>,
    #[uniffi(default)]
    pub works: Vec<Work>,
    #[uniffi(default)]
    pub contact: ContactPreferences,
    #[uniffi(default)]
    pub consents: Vec<Consent>,
    #[uniffi(default)]
    pub scientific_interests: SharedText,
    pub privacy: PrivacyState,
    #[uniffi(default)]
    pub merged_into: Option<String>,
    #[uniffi(default)]
    pub merged_from: Vec<String>,
}

#[uniffi::remote(Enum)]
pub enum AttendeeKind {
    Hcp,
    Internal,
    Other,
    Unknown,
}

#[uniffi::remote(Record)]
pub struct Attendee {
    pub id: String,
    pub name: String,
    pub kind: AttendeeKind,
    #[uniffi(default)]
    pub kol_id: Option<String>,
}

#[uniffi::remote(Record)]
pub struct Topic {
    pub id: String,
    pub title: String,
    #[uniffi(default)]
    pub discussion: SharedText,
}

#[uniffi::remote(Record)]
/// Approved material shown or left at an interaction (core's `Material`).
#[uniffi(name = "InteractionMaterial")]
pub struct Material {
    pub id: String,
    pub title: String,
    #[uniffi(default)]
    pub reference: Option<String>,
}

#[uniffi::remote(Enum)]
pub enum TaskStatus {
    Open,
    InProgress,
    Done,
    Cancelled,
    Unknown,
}

#[uniffi::remote(Record)]
pub struct FollowUp {
    pub id: String,
    pub description: String,
    pub owner: String,
    #[uniffi(default)]
    pub due: Option<i64>,
    pub status: TaskStatus,
}

#[uniffi::remote(Record)]
pub struct Interaction {
    pub kol_id: String,
    pub start: i64,
    #[uniffi(default)]
    pub end: Option<i64>,
    pub channel: Channel,
    #[uniffi(default)]
    pub location: Option<String>,
    #[uniffi(default)]
    pub attendees: Vec<Attendee>,
    #[uniffi(default)]
    pub topics: Vec<Topic>,
    #[uniffi(default)]
    pub summary: SharedText,
    #[uniffi(default)]
    pub materials: Vec<Material>,
    #[uniffi(default)]
    pub follow_ups: Vec<FollowUp>,
    #[uniffi(default)]
    pub insight_ids: Vec<String>,
    #[uniffi(default)]
    pub mir_ids: Vec<String>,
    pub status: RecordStatus,
    #[uniffi(default)]
    pub submission: Option<Submission>,
    #[uniffi(default)]
    pub unlocks: Vec<Unlock>,
}

#[uniffi::remote(Record)]
pub struct Review {
    pub reviewer: String,
    pub at: i64,
    #[uniffi(default)]
    pub rating: Option<i64>,
    pub comment: String,
}

#[uniffi::remote(Record)]
pub struct MedicalInsight {
    #[uniffi(default)]
    pub text: SharedText,
    #[uniffi(default)]
    pub interaction_id: Option<String>,
    #[uniffi(default)]
    pub event: Option<String>,
    #[uniffi(default)]
    pub kol_ids: Vec<String>,
    #[uniffi(default)]
    pub product: Option<String>,
    #[uniffi(default)]
    pub disease: Option<String>,
    #[uniffi(default)]
    pub themes: Vec<String>,
    pub status: RecordStatus,
    #[uniffi(default)]
    pub submission: Option<Submission>,
    #[uniffi(default)]
    pub review: Option<Review>,
    #[uniffi(default)]
    pub unlocks: Vec<Unlock>,
}

#[uniffi::remote(Enum)]
pub enum RequestOrigin {
    Unsolicited,
    Solicited,
    Unknown,
}

#[uniffi::remote(Enum)]
pub enum DeliveryMethod {
    InPerson,
    Email,
    Mail,
    Phone,
    MedicalInformationCallBack,
    Unknown,
}

#[uniffi::remote(Enum)]
pub enum Fulfilment {
    Open,
    SentToMedicalInformation,
    Answered,
    Closed,
    Unknown,
}

#[uniffi::remote(Record)]
/// The HCP's signature on a medical information request (core's `Signature`).
#[uniffi(name = "RequestSignature")]
pub struct Signature {
    pub signed_by: String,
    pub signed_at: i64,
    #[uniffi(default)]
    pub image_ref: Option<String>,
}

#[uniffi::remote(Record)]
pub struct MedicalInformationRequest {
    pub kol_id: String,
    #[uniffi(default)]
    pub interaction_id: Option<String>,
    pub question: String,
    #[uniffi(default)]
    pub products: Vec<String>,
    pub origin: RequestOrigin,
    #[uniffi(default)]
    pub origin_detail: String,
    pub recipient: String,
    pub delivery_method: DeliveryMethod,
    #[uniffi(default)]
    pub answer: SharedText,
    #[uniffi(default)]
    pub signature: Option<Signature>,
    pub fulfilment: Fulfilment,
    pub status: RecordStatus,
    #[uniffi(default)]
    pub submission: Option<Submission>,
    #[uniffi(default)]
    pub unlocks: Vec<Unlock>,
}

#[uniffi::remote(Record)]
pub struct PlanItem {
    pub id: String,
    pub text: String,
}

#[uniffi::remote(Record)]
/// A planned activity of an engagement plan, with an owner and a status (core's `Activity`).
#[uniffi(name = "PlanActivity")]
pub struct Activity {
    pub id: String,
    pub description: String,
    pub owner: String,
    #[uniffi(default)]
    pub due: Option<i64>,
    pub status: TaskStatus,
}

#[uniffi::remote(Record)]
pub struct EngagementPlan {
    pub kol_id: String,
    pub title: String,
    #[uniffi(default)]
    pub objectives: Vec<PlanItem>,
    #[uniffi(default)]
    pub tactics: Vec<PlanItem>,
    #[uniffi(default)]
    pub activities: Vec<Activity>,
    #[uniffi(default)]
    pub notes: SharedText,
}

/// The kind of a liaison document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordKind {
    KolProfile,
    Interaction,
    MedicalInsight,
    MedicalInformationRequest,
    EngagementPlan,
}

impl From<liaison_core::model::Kind> for RecordKind {
    fn from(k: liaison_core::model::Kind) -> Self {
        use liaison_core::model::Kind;
        match k {
            Kind::KolProfile => Self::KolProfile,
            Kind::Interaction => Self::Interaction,
            Kind::MedicalInsight => Self::MedicalInsight,
            Kind::MedicalInformationRequest => Self::MedicalInformationRequest,
            Kind::EngagementPlan => Self::EngagementPlan,
        }
    }
}

impl From<RecordKind> for liaison_core::model::Kind {
    fn from(k: RecordKind) -> Self {
        match k {
            RecordKind::KolProfile => Self::KolProfile,
            RecordKind::Interaction => Self::Interaction,
            RecordKind::MedicalInsight => Self::MedicalInsight,
            RecordKind::MedicalInformationRequest => Self::MedicalInformationRequest,
            RecordKind::EngagementPlan => Self::EngagementPlan,
        }
    }
}

/// A row of the KOL list, read from the index without loading documents.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct KolSummary {
    pub id: String,
    pub name: String,
    pub name_kana: Option<String>,
    pub institution: String,
    pub specialty: Option<String>,
    /// Set when this KOL was merged into another (the app should show that one).
    pub merged_into: Option<String>,
    /// The KOL asked not to be contacted.
    pub do_not_contact: bool,
    pub privacy: PrivacyState,
    pub tier: Option<String>,
    pub therapeutic_areas: Vec<String>,
    /// When the KOL's newest interaction began (ms since the epoch), counting those filed under
    /// profiles merged into it.
    pub last_interaction: Option<i64>,
}

impl From<liaison_core::store::KolSummary> for KolSummary {
    fn from(s: liaison_core::store::KolSummary) -> Self {
        Self {
            id: s.id.to_string(),
            name: s.name,
            name_kana: s.name_kana,
            institution: s.institution,
            specialty: s.specialty,
            merged_into: s.merged_into.map(|m| m.to_string()),
            do_not_contact: s.do_not_contact,
            privacy: s.privacy,
            tier: s.tier,
            therapeutic_areas: s.therapeutic_areas,
            last_interaction: s.last_interaction,
        }
    }
}

/// One change in a document's history.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HistoryEntry {
    /// The change hash (hex).
    pub hash: String,
    pub user: Option<String>,
    pub device: Option<String>,
    /// Whether the author's actor id matches the recorded user and device.
    pub verified: bool,
    /// Milliseconds since the Unix epoch, as the author's device recorded it.
    pub time_ms: i64,
    /// Field paths the change touched, like `notes` or `activities/2/status`.
    pub fields: Vec<String>,
}

impl From<liaison_core::model::HistoryEntry> for HistoryEntry {
    fn from(h: liaison_core::model::HistoryEntry) -> Self {
        Self {
            hash: h.hash.to_string(),
            user: h.user,
            device: h.device,
            verified: h.verified,
            time_ms: h.time,
            fields: h.fields,
        }
    }
}

/// A change the observer hears about.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocumentChange {
    pub id: String,
    pub kind: Option<RecordKind>,
    /// Arrived from the relay (another device's edit) rather than made here.
    pub remote: bool,
    /// The document was deleted from this device (erased, or access removed).
    pub deleted: bool,
    /// Why: the last reason when several changes arrive as one.
    pub reason: ChangeReason,
}

/// Why a document changed, for the app to tell its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChangeReason {
    /// New on this device (made here or received for the first time).
    Created,
    /// Edited on this device.
    UpdatedLocally,
    /// Another device's edit arrived.
    UpdatedRemotely,
    /// Erased (GDPR / APPI erasure by IT, or deleted here).
    Erased,
    /// The user may no longer read it (territory change, revoked grant): removed from this device.
    AccessRemoved,
    /// A KOL merged into another profile (the record stays, pointing to the survivor).
    MergedAway,
}

impl From<liaison_core::store::ChangeReason> for ChangeReason {
    fn from(r: liaison_core::store::ChangeReason) -> Self {
        use liaison_core::store::ChangeReason as R;
        match r {
            R::Created => Self::Created,
            R::UpdatedLocally => Self::UpdatedLocally,
            R::UpdatedRemotely => Self::UpdatedRemotely,
            R::Erased => Self::Erased,
            R::AccessRemoved => Self::AccessRemoved,
            R::MergedAway => Self::MergedAway,
        }
    }
}
