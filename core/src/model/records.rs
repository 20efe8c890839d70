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
//! Times are milliseconds since the Unix epoch (UTC). [`Text::splice`] positions are UTF-8 byte
//! offsets into [`Text::as_str`], not characters: find them with `str::find` or `char_indices`.

use autosurgeon::{Hydrate, Reconcile, Text};

use super::open_enum::open_enum;

open_enum! {
    /// How an MSL met or reached a KOL.
    pub enum Channel {
        /// Face to face, at the KOL's institution or elsewhere.
        InPerson = "in_person",
        /// A telephone call.
        Phone = "phone",
        /// A video call (a "virtual" interaction).
        Video = "video",
        /// A meeting at a medical congress or scientific event.
        Congress = "congress",
        /// Email.
        Email = "email",
    }
}

/// Draft records can be edited; submitted ones are locked until an admin unlocks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub enum RecordStatus {
    /// Editable. New records start here, and an admin's unlock returns them here.
    #[default]
    #[autosurgeon(rename = "draft")]
    Draft,
    /// Locked: set only by [`submit_record`](crate::model::submit_record), which also fills `submission`.
    #[autosurgeon(rename = "submitted")]
    Submitted,
}

/// Who submitted (locked) a record, and when.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Submission {
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub at: i64,
    /// The submitting user (the [`Identity::user`](crate::Identity::user) of the device that submitted).
    pub user: String,
    /// The device it was submitted from.
    pub device: String,
}

/// An admin's unlock of a submitted record, kept for audit.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Unlock {
    /// Unique among the record's unlocks (the store makes a random one).
    #[key]
    pub id: String,
    /// When the admin unlocked it, in milliseconds since the Unix epoch.
    pub at: i64,
    /// The admin who unlocked it.
    pub user: String,
    /// Why it was unlocked, as the admin wrote it.
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// KOL profile

/// One of the KOL's institutions, with their department and title there.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Affiliation {
    /// Stable item id, unique within the list: concurrent edits to one affiliation merge by it.
    #[key]
    pub id: String,
    /// Hospital, university or other institution.
    pub institution: String,
    /// Department at that institution.
    pub department: Option<String>,
    /// Title or position there (for example professor, head of department).
    pub title: Option<String>,
    /// Whether this is the KOL's main affiliation. Affiliations taken over in a duplicate merge are
    /// added as not primary.
    pub primary: bool,
}

/// A role the KOL holds in a medical or scientific society.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct SocietyRole {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// The society's name.
    pub society: String,
    /// The role in it (for example board member, guideline committee chair).
    pub role: String,
}

open_enum! {
    /// What a [`Work`] is.
    pub enum WorkKind {
        /// A published paper.
        Publication = "publication",
        /// A clinical trial the KOL is involved in.
        Trial = "trial",
        /// A talk or other speaking engagement.
        Speaking = "speaking",
    }
}

/// A publication, clinical trial or speaking engagement (optional in most CRMs).
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Work {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// Publication, trial or speaking engagement.
    pub kind: WorkKind,
    /// Title of the paper, trial or talk.
    pub title: String,
    /// Calendar year (for example 2024), when known.
    pub year: Option<i64>,
    /// A citation, DOI, trial registry number or similar, as free text.
    pub reference: Option<String>,
}

/// How and when the KOL wants to be contacted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hydrate, Reconcile)]
pub struct ContactPreferences {
    /// The KOL asked not to be contacted. A duplicate merge keeps it set if either profile had it.
    pub do_not_contact: bool,
    /// Preferred times, as free text (for example "Tuesday afternoons after clinic").
    pub best_times: Option<String>,
    /// The channel the KOL prefers, if stated.
    pub preferred_channel: Option<Channel>,
}

/// A consent the KOL gave, for one channel and scope.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Consent {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// The channel the consent covers.
    pub channel: Channel,
    /// What the consent covers, as free text.
    pub scope: String,
    /// When it was captured, in milliseconds since the Unix epoch.
    pub captured_at: i64,
    /// When it lapses, in milliseconds since the Unix epoch; `None` if it does not expire.
    pub expires_at: Option<i64>,
}

open_enum! {
    /// The privacy state of a KOL profile.
    /// A recorded state: nothing in core acts on it. Removing an HCP's personal data is done by
    /// erasing the profile document on the relay, which tells every device to delete its copy.
    pub enum PrivacyState {
        /// No privacy request recorded.
        Active = "active",
        /// The HCP has opted out of having their data processed.
        OptedOut = "opted_out",
        /// The profile's personal data has been anonymised.
        Anonymised = "anonymised",
    }
}

// Not derived: `open_enum!` declares the enum, and `#[default]` cannot be passed through it.
#[allow(clippy::derivable_impls)]
impl Default for PrivacyState {
    fn default() -> Self {
        Self::Active
    }
}

/// One KOL (a healthcare professional). Other records refer to it by document id only, so that
/// erasing this document erases the person.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct KolProfile {
    /// The master-data id (for example a Veeva OpenData or MDM id), when known.
    pub master_id: Option<String>,
    /// Full name as displayed.
    pub name: String,
    /// Reading of the name (Japanese kana), used for sorting and search.
    pub name_kana: Option<String>,
    /// The KOL's main institution. A duplicate merge fills it from the other profile when blank.
    pub institution: String,
    /// Department at the main institution.
    pub department: Option<String>,
    /// Title or position at the main institution.
    pub title: Option<String>,
    /// Medical specialty (for example oncology).
    pub specialty: Option<String>,
    /// Therapeutic areas the KOL works in; a duplicate merge unions them.
    #[autosurgeon(missing = "Default::default")]
    pub therapeutic_areas: Vec<String>,
    /// Tier or influence rating, as the company's segmentation names it (free text, optional).
    pub tier: Option<String>,
    /// Institutions and affiliations beyond the main one.
    #[autosurgeon(missing = "Default::default")]
    pub affiliations: Vec<Affiliation>,
    /// Roles in medical and scientific societies.
    #[autosurgeon(missing = "Default::default")]
    pub society_roles: Vec<SocietyRole>,
    /// Publications, trials and speaking engagements.
    #[autosurgeon(missing = "Default::default")]
    pub works: Vec<Work>,
    /// Contact preferences (do-not-contact, best times, preferred channel).
    #[autosurgeon(missing = "Default::default")]
    pub contact: ContactPreferences,
    /// Consents given, per channel and scope.
    #[autosurgeon(missing = "Default::default")]
    pub consents: Vec<Consent>,
    /// Documented scientific interests, merged per character when edited concurrently.
    #[autosurgeon(missing = "Default::default")]
    pub scientific_interests: Text,
    /// Opt-out or anonymisation state.
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

open_enum! {
    /// Who an [`Attendee`] is.
    pub enum AttendeeKind {
        /// A healthcare professional.
        Hcp = "hcp",
        /// Someone from the company (an MSL, manager or other colleague).
        Internal = "internal",
        /// Anyone else.
        Other = "other",
    }
}

/// A person present at an interaction.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Attendee {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// Name as recorded by the MSL.
    pub name: String,
    /// HCP, colleague or other.
    pub kind: AttendeeKind,
    /// The KOL document id when the attendee is a known KOL.
    pub kol_id: Option<String>,
}

/// One topic discussed in an interaction, with its discussion text.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct Topic {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// Short title of the topic.
    pub title: String,
    /// What was discussed, merged per character when edited concurrently.
    pub discussion: Text,
}

/// A material shown during an interaction.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Material {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// Title of the material.
    pub title: String,
    /// Document number or version in the approved-materials library.
    pub reference: Option<String>,
}

open_enum! {
    /// Progress of a follow-up or planned activity.
    pub enum TaskStatus {
        /// Not started.
        Open = "open",
        /// Being worked on.
        InProgress = "in_progress",
        /// Completed.
        Done = "done",
        /// Dropped without being done.
        Cancelled = "cancelled",
    }
}

// Not derived: `open_enum!` declares the enum, and `#[default]` cannot be passed through it.
#[allow(clippy::derivable_impls)]
impl Default for TaskStatus {
    fn default() -> Self {
        Self::Open
    }
}

/// Something to do after an interaction, with an owner and a due date.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct FollowUp {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// What is to be done.
    pub description: String,
    /// Who is responsible for it.
    pub owner: String,
    /// Due date and time in milliseconds since the Unix epoch, if any.
    pub due: Option<i64>,
    /// Open, in progress, done or cancelled.
    pub status: TaskStatus,
}

/// A visit, call, congress meeting or virtual meeting with a KOL.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct Interaction {
    /// The KOL's document id (bs58check text of a [`DocumentId`](crate::DocumentId)); checked on every write.
    pub kol_id: String,
    /// When the interaction began, in milliseconds since the Unix epoch.
    pub start: i64,
    /// When it ended, in milliseconds since the Unix epoch, if recorded.
    pub end: Option<i64>,
    /// How it took place: in person, phone, video, congress or email.
    pub channel: Channel,
    /// Where it took place, as free text.
    pub location: Option<String>,
    /// People present: HCPs, colleagues and others.
    #[autosurgeon(missing = "Default::default")]
    pub attendees: Vec<Attendee>,
    /// Topics discussed, each with its own discussion text.
    #[autosurgeon(missing = "Default::default")]
    pub topics: Vec<Topic>,
    /// Overall summary, merged per character when edited concurrently.
    #[autosurgeon(missing = "Default::default")]
    pub summary: Text,
    /// Materials shown.
    #[autosurgeon(missing = "Default::default")]
    pub materials: Vec<Material>,
    /// Follow-up tasks agreed.
    #[autosurgeon(missing = "Default::default")]
    pub follow_ups: Vec<FollowUp>,
    /// Document ids of the [`MedicalInsight`]s captured from this interaction.
    #[autosurgeon(missing = "Default::default")]
    pub insight_ids: Vec<String>,
    /// Document ids of the [`MedicalInformationRequest`]s raised in this interaction.
    #[autosurgeon(missing = "Default::default")]
    pub mir_ids: Vec<String>,
    /// Draft or submitted; submitted interactions refuse edits.
    #[autosurgeon(missing = "Default::default")]
    pub status: RecordStatus,
    /// Who submitted it and when: set by submit, cleared by an admin's unlock.
    pub submission: Option<Submission>,
    /// Every admin unlock, appended on each one and never removed, for audit.
    #[autosurgeon(missing = "Default::default")]
    pub unlocks: Vec<Unlock>,
}

impl Interaction {
    /// A draft interaction with `kol_id` starting at `start` (milliseconds since the Unix epoch);
    /// everything else empty.
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

/// A manager's review of a medical insight.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Review {
    /// The reviewing user.
    pub reviewer: String,
    /// When the review was written, in milliseconds since the Unix epoch.
    pub at: i64,
    /// Optional numeric rating; liaison does not fix a scale or check a range.
    pub rating: Option<i64>,
    /// The reviewer's comment.
    pub comment: String,
}

/// A medical insight: something learned from a KOL that matters to medical strategy.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct MedicalInsight {
    /// The insight itself, merged per character when edited concurrently.
    pub text: Text,
    /// The interaction the insight came from, if any.
    pub interaction_id: Option<String>,
    /// A congress or other event, when the source is not an interaction.
    pub event: Option<String>,
    /// Document ids of the KOLs it came from; each is checked on every write.
    #[autosurgeon(missing = "Default::default")]
    pub kol_ids: Vec<String>,
    /// The product it concerns, if any.
    pub product: Option<String>,
    /// The disease or indication it concerns, if any.
    pub disease: Option<String>,
    /// Theme tags (free text).
    #[autosurgeon(missing = "Default::default")]
    pub themes: Vec<String>,
    /// Draft or submitted; submitted insights refuse edits.
    #[autosurgeon(missing = "Default::default")]
    pub status: RecordStatus,
    /// Who submitted it and when: set by submit, cleared by an admin's unlock.
    pub submission: Option<Submission>,
    /// A manager's review, if there is one.
    pub review: Option<Review>,
    /// Every admin unlock, appended on each one and never removed, for audit.
    #[autosurgeon(missing = "Default::default")]
    pub unlocks: Vec<Unlock>,
}

impl MedicalInsight {
    /// A draft insight with `text` about the KOLs in `kol_ids`; everything else empty.
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

open_enum! {
    /// How the request arose. Off-label answers are allowed only for unsolicited requests.
    pub enum RequestOrigin {
        /// The HCP asked on their own initiative.
        Unsolicited = "unsolicited",
        /// Asked in reply to something the company said or showed; off-label answers are not allowed.
        Solicited = "solicited",
    }
}

open_enum! {
    /// How the answer to a medical information request is delivered.
    pub enum DeliveryMethod {
        /// Handed over or explained in person.
        InPerson = "in_person",
        /// By email.
        Email = "email",
        /// By post.
        Mail = "mail",
        /// By telephone.
        Phone = "phone",
        /// A call back from the medical information department.
        MedicalInformationCallBack = "medical_information_call_back",
    }
}

open_enum! {
    /// Where a medical information request stands.
    pub enum Fulfilment {
        /// Recorded, not yet passed on or answered.
        Open = "open",
        /// Passed to the medical information department to answer.
        SentToMedicalInformation = "sent_to_medical_information",
        /// The answer has been provided.
        Answered = "answered",
        /// Closed; nothing more to do.
        Closed = "closed",
    }
}

// Not derived: `open_enum!` declares the enum, and `#[default]` cannot be passed through it.
#[allow(clippy::derivable_impls)]
impl Default for Fulfilment {
    fn default() -> Self {
        Self::Open
    }
}

/// The HCP's signature on a medical information request.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Signature {
    /// The signer's name as written.
    pub signed_by: String,
    /// When it was signed, in milliseconds since the Unix epoch.
    pub signed_at: i64,
    /// Reference to the captured signature image (stored outside the document).
    pub image_ref: Option<String>,
}

/// A medical information request (MIR): a question an HCP asked that the company must answer
/// and keep a record of (how it arose, who received the answer, what was provided).
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct MedicalInformationRequest {
    /// The document id of the KOL who asked; checked on every write.
    pub kol_id: String,
    /// Document id of the interaction in which it was asked, if any.
    pub interaction_id: Option<String>,
    /// The question exactly as asked.
    pub question: String,
    /// Products the question concerns.
    #[autosurgeon(missing = "Default::default")]
    pub products: Vec<String>,
    /// Unsolicited or solicited; an off-label answer is allowed only for an unsolicited request.
    pub origin: RequestOrigin,
    /// Free-text account of how the request arose, as the guideline requires.
    #[autosurgeon(missing = "Default::default")]
    pub origin_detail: String,
    /// Who receives the answer.
    pub recipient: String,
    /// How the answer is to be delivered.
    pub delivery_method: DeliveryMethod,
    /// The answer provided, merged per character when edited concurrently.
    #[autosurgeon(missing = "Default::default")]
    pub answer: Text,
    /// The HCP's signature, once captured.
    pub signature: Option<Signature>,
    /// Open, sent to medical information, answered or closed.
    #[autosurgeon(missing = "Default::default")]
    pub fulfilment: Fulfilment,
    /// Draft or submitted; submitted MIRs refuse edits.
    #[autosurgeon(missing = "Default::default")]
    pub status: RecordStatus,
    /// Who submitted it and when: set by submit, cleared by an admin's unlock.
    pub submission: Option<Submission>,
    /// Every admin unlock, appended on each one and never removed, for audit.
    #[autosurgeon(missing = "Default::default")]
    pub unlocks: Vec<Unlock>,
}

// ---------------------------------------------------------------------------------------------
// Engagement plan

/// An objective or tactic in an engagement plan.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct PlanItem {
    /// Stable item id, unique within the list: two people editing different items do not conflict.
    #[key]
    pub id: String,
    /// The objective or tactic, as one value: concurrent edits keep one of them.
    pub text: String,
}

/// A planned activity in an engagement plan.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Activity {
    /// Stable item id, unique within the list.
    #[key]
    pub id: String,
    /// What is planned.
    pub description: String,
    /// Who is responsible for it.
    pub owner: String,
    /// Due date and time in milliseconds since the Unix epoch, if any.
    pub due: Option<i64>,
    /// Open, in progress, done or cancelled.
    pub status: TaskStatus,
}

/// How the team engages one KOL; co-edited by the team.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile)]
pub struct EngagementPlan {
    /// The document id of the KOL the plan is for; checked on every write.
    pub kol_id: String,
    /// The plan's title.
    pub title: String,
    /// What the team wants to achieve with this KOL.
    #[autosurgeon(missing = "Default::default")]
    pub objectives: Vec<PlanItem>,
    /// How the team means to achieve it.
    #[autosurgeon(missing = "Default::default")]
    pub tactics: Vec<PlanItem>,
    /// Planned activities, each with an owner, due date and status.
    #[autosurgeon(missing = "Default::default")]
    pub activities: Vec<Activity>,
    /// Free-text notes that several people edit at once, merged per character.
    #[autosurgeon(missing = "Default::default")]
    pub notes: Text,
}

impl EngagementPlan {
    /// An empty plan for the KOL `kol_id`, titled `title`.
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
