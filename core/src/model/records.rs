//! The typed records. Each is the `record` part of one Automerge document.
//!
//! Conventions that make concurrent offline edits merge well:
//! - text that several people edit (plan notes, summaries, insight text, discussion) is
//!   [`Text`], merged per character;
//! - lists whose items are edited in place carry a stable `id` marked `#[key]`, so autosurgeon
//!   matches items by id and two devices editing different items touch different objects;
//! - short single-valued fields (names, dates, statuses) are scalars: concurrent writes resolve to
//!   one value, the same on every device.
//!
//! Times are milliseconds since the Unix epoch (UTC).

use autosurgeon::{Hydrate, Reconcile, Text};

/// How an MSL met or reached a KOL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hydrate, Reconcile)]
pub enum Channel {
    #[autosurgeon(rename = "in_person")]
    InPerson,
    #[autosurgeon(rename = "phone")]
    Phone,
    #[autosurgeon(rename = "video")]
    Video,
    #[autosurgeon(rename = "congress")]
    Congress,
    #[autosurgeon(rename = "email")]
    Email,
}

/// Draft records can be edited; submitted ones are locked until an admin unlocks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub enum RecordStatus {
    #[default]
    #[autosurgeon(rename = "draft")]
    Draft,
    #[autosurgeon(rename = "submitted")]
    Submitted,
}

/// Who submitted (locked) a record, and when.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Submission {
    pub at: i64,
    pub user: String,
    pub device: String,
}

/// An admin's unlock of a submitted record, kept for audit.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Unlock {
    #[key]
    pub id: String,
    pub at: i64,
    pub user: String,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// KOL profile

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Affiliation {
    #[key]
    pub id: String,
    pub institution: String,
    pub department: Option<String>,
    pub title: Option<String>,
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct SocietyRole {
    #[key]
    pub id: String,
    pub society: String,
    pub role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hydrate, Reconcile)]
pub enum WorkKind {
    #[autosurgeon(rename = "publication")]
    Publication,
    #[autosurgeon(rename = "trial")]
    Trial,
    #[autosurgeon(rename = "speaking")]
    Speaking,
}

/// A publication, clinical trial or speaking engagement (optional in most CRMs).
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Work {
    #[key]
    pub id: String,
    pub kind: WorkKind,
    pub title: String,
    pub year: Option<i64>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub struct ContactPreferences {
    pub do_not_contact: bool,
    pub best_times: Option<String>,
    pub preferred_channel: Option<Channel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Consent {
    #[key]
    pub id: String,
    pub channel: Channel,
    pub scope: String,
    pub captured_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub enum PrivacyState {
    #[default]
    #[autosurgeon(rename = "active")]
    Active,
    #[autosurgeon(rename = "opted_out")]
    OptedOut,
    #[autosurgeon(rename = "anonymised")]
    Anonymised,
}

/// One KOL (a healthcare professional). Other records refer to it by document id only, so that
/// erasing this document erases the person.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct KolProfile {
    /// The master-data id (for example a Veeva OpenData or MDM id), when known.
    pub master_id: Option<String>,
    pub name: String,
    /// Reading of the name (Japanese kana), used for sorting and search.
    pub name_kana: Option<String>,
    pub institution: String,
    pub department: Option<String>,
    pub title: Option<String>,
    pub specialty: Option<String>,
    #[autosurgeon(missing = "Default::default")]
    pub therapeutic_areas: Vec<String>,
    pub tier: Option<String>,
    #[autosurgeon(missing = "Default::default")]
    pub affiliations: Vec<Affiliation>,
    #[autosurgeon(missing = "Default::default")]
    pub society_roles: Vec<SocietyRole>,
    #[autosurgeon(missing = "Default::default")]
    pub works: Vec<Work>,
    #[autosurgeon(missing = "Default::default")]
    pub contact: ContactPreferences,
    #[autosurgeon(missing = "Default::default")]
    pub consents: Vec<Consent>,
    #[autosurgeon(missing = "Default::default")]
    pub scientific_interests: Text,
    #[autosurgeon(missing = "Default::default")]
    pub privacy: PrivacyState,
    /// Set on the losing profile of a duplicate merge: the profile that absorbed this one.
    pub merged_into: Option<String>,
    /// Set on the winning profile: every profile merged into it.
    #[autosurgeon(missing = "Default::default")]
    pub merged_from: Vec<String>,
}

impl KolProfile {
    /// A profile with a name and an institution; everything else empty.
    pub fn new(name: impl Into<String>, institution: impl Into<String>) -> Self {
        Self {
            master_id: None,
            name: name.into(),
            name_kana: None,
            institution: institution.into(),
            department: None,
            title: None,
            specialty: None,
            therapeutic_areas: Vec::new(),
            tier: None,
            affiliations: Vec::new(),
            society_roles: Vec::new(),
            works: Vec::new(),
            contact: ContactPreferences::default(),
            consents: Vec::new(),
            scientific_interests: Text::default(),
            privacy: PrivacyState::Active,
            merged_into: None,
            merged_from: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Interaction

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hydrate, Reconcile)]
pub enum AttendeeKind {
    #[autosurgeon(rename = "hcp")]
    Hcp,
    #[autosurgeon(rename = "internal")]
    Internal,
    #[autosurgeon(rename = "other")]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Attendee {
    #[key]
    pub id: String,
    pub name: String,
    pub kind: AttendeeKind,
    /// The KOL document id when the attendee is a known KOL.
    pub kol_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct Topic {
    #[key]
    pub id: String,
    pub title: String,
    pub discussion: Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Material {
    #[key]
    pub id: String,
    pub title: String,
    /// Document number or version in the approved-materials library.
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub enum TaskStatus {
    #[default]
    #[autosurgeon(rename = "open")]
    Open,
    #[autosurgeon(rename = "in_progress")]
    InProgress,
    #[autosurgeon(rename = "done")]
    Done,
    #[autosurgeon(rename = "cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct FollowUp {
    #[key]
    pub id: String,
    pub description: String,
    pub owner: String,
    pub due: Option<i64>,
    pub status: TaskStatus,
}

/// A visit, call, congress meeting or virtual meeting with a KOL.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct Interaction {
    pub kol_id: String,
    pub start: i64,
    pub end: Option<i64>,
    pub channel: Channel,
    pub location: Option<String>,
    #[autosurgeon(missing = "Default::default")]
    pub attendees: Vec<Attendee>,
    #[autosurgeon(missing = "Default::default")]
    pub topics: Vec<Topic>,
    #[autosurgeon(missing = "Default::default")]
    pub summary: Text,
    #[autosurgeon(missing = "Default::default")]
    pub materials: Vec<Material>,
    #[autosurgeon(missing = "Default::default")]
    pub follow_ups: Vec<FollowUp>,
    #[autosurgeon(missing = "Default::default")]
    pub insight_ids: Vec<String>,
    #[autosurgeon(missing = "Default::default")]
    pub mir_ids: Vec<String>,
    #[autosurgeon(missing = "Default::default")]
    pub status: RecordStatus,
    pub submission: Option<Submission>,
    #[autosurgeon(missing = "Default::default")]
    pub unlocks: Vec<Unlock>,
}

impl Interaction {
    pub fn new(kol_id: &crate::DocumentId, start: i64, channel: Channel) -> Self {
        Self {
            kol_id: kol_id.to_string(),
            start,
            end: None,
            channel,
            location: None,
            attendees: Vec::new(),
            topics: Vec::new(),
            summary: Text::default(),
            materials: Vec::new(),
            follow_ups: Vec::new(),
            insight_ids: Vec::new(),
            mir_ids: Vec::new(),
            status: RecordStatus::Draft,
            submission: None,
            unlocks: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Medical insight

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Review {
    pub reviewer: String,
    pub at: i64,
    pub rating: Option<i64>,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct MedicalInsight {
    pub text: Text,
    /// The interaction the insight came from, if any.
    pub interaction_id: Option<String>,
    /// A congress or other event, when the source is not an interaction.
    pub event: Option<String>,
    #[autosurgeon(missing = "Default::default")]
    pub kol_ids: Vec<String>,
    pub product: Option<String>,
    pub disease: Option<String>,
    #[autosurgeon(missing = "Default::default")]
    pub themes: Vec<String>,
    #[autosurgeon(missing = "Default::default")]
    pub status: RecordStatus,
    pub submission: Option<Submission>,
    pub review: Option<Review>,
    #[autosurgeon(missing = "Default::default")]
    pub unlocks: Vec<Unlock>,
}

impl MedicalInsight {
    pub fn new(text: &str, kol_ids: &[crate::DocumentId]) -> Self {
        Self {
            text: Text::with_value(text),
            interaction_id: None,
            event: None,
            kol_ids: kol_ids.iter().map(ToString::to_string).collect(),
            product: None,
            disease: None,
            themes: Vec::new(),
            status: RecordStatus::Draft,
            submission: None,
            review: None,
            unlocks: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Medical information request

/// How the request arose. Off-label answers are allowed only for unsolicited requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hydrate, Reconcile)]
pub enum RequestOrigin {
    /// The HCP asked on their own initiative.
    #[autosurgeon(rename = "unsolicited")]
    Unsolicited,
    /// Asked in reply to something the company said or showed; off-label answers are not allowed.
    #[autosurgeon(rename = "solicited")]
    Solicited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hydrate, Reconcile)]
pub enum DeliveryMethod {
    #[autosurgeon(rename = "in_person")]
    InPerson,
    #[autosurgeon(rename = "email")]
    Email,
    #[autosurgeon(rename = "mail")]
    Mail,
    #[autosurgeon(rename = "phone")]
    Phone,
    #[autosurgeon(rename = "medical_information_call_back")]
    MedicalInformationCallBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub enum Fulfilment {
    #[default]
    #[autosurgeon(rename = "open")]
    Open,
    #[autosurgeon(rename = "sent_to_medical_information")]
    SentToMedicalInformation,
    #[autosurgeon(rename = "answered")]
    Answered,
    #[autosurgeon(rename = "closed")]
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Signature {
    /// The signer's name as written.
    pub signed_by: String,
    pub signed_at: i64,
    /// Reference to the captured signature image (stored outside the document).
    pub image_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct MedicalInformationRequest {
    pub kol_id: String,
    pub interaction_id: Option<String>,
    /// The question exactly as asked.
    pub question: String,
    #[autosurgeon(missing = "Default::default")]
    pub products: Vec<String>,
    pub origin: RequestOrigin,
    /// Free-text account of how the request arose, as the guideline requires.
    #[autosurgeon(missing = "Default::default")]
    pub origin_detail: String,
    pub recipient: String,
    pub delivery_method: DeliveryMethod,
    #[autosurgeon(missing = "Default::default")]
    pub answer: Text,
    pub signature: Option<Signature>,
    #[autosurgeon(missing = "Default::default")]
    pub fulfilment: Fulfilment,
    #[autosurgeon(missing = "Default::default")]
    pub status: RecordStatus,
    pub submission: Option<Submission>,
    #[autosurgeon(missing = "Default::default")]
    pub unlocks: Vec<Unlock>,
}

// ---------------------------------------------------------------------------------------------
// Engagement plan

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct PlanItem {
    #[key]
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Activity {
    #[key]
    pub id: String,
    pub description: String,
    pub owner: String,
    pub due: Option<i64>,
    pub status: TaskStatus,
}

/// How the team engages one KOL; co-edited by the team.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct EngagementPlan {
    pub kol_id: String,
    pub title: String,
    #[autosurgeon(missing = "Default::default")]
    pub objectives: Vec<PlanItem>,
    #[autosurgeon(missing = "Default::default")]
    pub tactics: Vec<PlanItem>,
    #[autosurgeon(missing = "Default::default")]
    pub activities: Vec<Activity>,
    #[autosurgeon(missing = "Default::default")]
    pub notes: Text,
}

impl EngagementPlan {
    pub fn new(kol_id: &crate::DocumentId, title: impl Into<String>) -> Self {
        Self {
            kol_id: kol_id.to_string(),
            title: title.into(),
            objectives: Vec::new(),
            tactics: Vec::new(),
            activities: Vec::new(),
            notes: Text::default(),
        }
    }
}

/// Folds a duplicate profile into the surviving one: fills what the winner lacks and unions the
/// lists, so nothing either MSL recorded is dropped.
pub fn absorb_profile(winner: &mut KolProfile, loser: &KolProfile, loser_id: &str) {
    fn fill(dst: &mut Option<String>, src: &Option<String>) {
        if dst.as_deref().is_none_or(str::is_empty) {
            dst.clone_from(src);
        }
    }
    fill(&mut winner.master_id, &loser.master_id);
    fill(&mut winner.name_kana, &loser.name_kana);
    fill(&mut winner.department, &loser.department);
    fill(&mut winner.title, &loser.title);
    fill(&mut winner.specialty, &loser.specialty);
    fill(&mut winner.tier, &loser.tier);
    if winner.institution.trim().is_empty() {
        winner.institution.clone_from(&loser.institution);
    }
    for a in &loser.therapeutic_areas {
        if !winner.therapeutic_areas.contains(a) {
            winner.therapeutic_areas.push(a.clone());
        }
    }
    for a in &loser.affiliations {
        if !winner.affiliations.iter().any(|w| w.id == a.id || w.institution == a.institution) {
            winner.affiliations.push(Affiliation { primary: false, ..a.clone() });
        }
    }
    for r in &loser.society_roles {
        if !winner.society_roles.iter().any(|w| w.id == r.id || (w.society == r.society && w.role == r.role)) {
            winner.society_roles.push(r.clone());
        }
    }
    for w in &loser.works {
        if !winner.works.iter().any(|x| x.id == w.id) {
            winner.works.push(w.clone());
        }
    }
    for c in &loser.consents {
        if !winner.consents.iter().any(|x| x.id == c.id) {
            winner.consents.push(c.clone());
        }
    }
    // The stricter contact preference wins: a do-not-contact is never lost in a merge.
    winner.contact.do_not_contact |= loser.contact.do_not_contact;
    fill(&mut winner.contact.best_times, &loser.contact.best_times);
    if winner.contact.preferred_channel.is_none() {
        winner.contact.preferred_channel = loser.contact.preferred_channel;
    }
    if winner.privacy == PrivacyState::Active {
        winner.privacy = loser.privacy;
    }
    let loser_text = loser.scientific_interests.as_str();
    if !loser_text.is_empty() && !winner.scientific_interests.as_str().contains(loser_text) {
        let end = winner.scientific_interests.as_str().len();
        let sep = if end == 0 { "" } else { "\n" };
        winner.scientific_interests.splice(end, 0, format!("{sep}{loser_text}"));
    }
    for id in std::iter::once(loser_id.to_owned()).chain(loser.merged_from.iter().cloned()) {
        if !winner.merged_from.contains(&id) {
            winner.merged_from.push(id);
        }
    }
}
