// Initialisers for new records that leave out what a new record cannot choose: its status (a
// new record is a draft), submission and unlocks (only `submit` and `unlock` set them), a new
// KOL's privacy state (active) and merge links (only `mergeKols` sets them), a new task's status
// (open). Hand-written because uniffi cannot give an enum-typed field a default (see
// ffi/src/types.rs); every other field defaults in the generated initialisers already. Each
// lacks the enum-typed parameter the generated initialiser requires, so a call never matches
// both. Same as mobile-bindings/kotlin/src/main/kotlin/app/liaison/core/Records.kt (compiled
// on CI, unlike this file: there is no Swift compiler on the Linux machine; tests/tests/
// bindings.rs checks this file's labels and types against the generated Swift instead).

extension Interaction {
    /// A draft interaction with a KOL at `start` (milliseconds since the Unix epoch).
    public init(kolId: String, start: Int64, end: Int64? = nil, channel: InteractionChannel, location: String? = nil,
                attendees: [Attendee] = [], topics: [Topic] = [], summary: SharedText = "",
                materials: [InteractionMaterial] = [], followUps: [FollowUp] = [], insightIds: [String] = [],
                mirIds: [String] = []) {
        self.init(kolId: kolId, start: start, end: end, channel: channel, location: location, attendees: attendees,
                  topics: topics, summary: summary, materials: materials, followUps: followUps,
                  insightIds: insightIds, mirIds: mirIds, status: .draft)
    }
}

extension MedicalInsight {
    /// A draft medical insight about the KOLs in `kolIds`.
    public init(text: SharedText, interactionId: String? = nil, event: String? = nil, kolIds: [String] = [],
                product: String? = nil, disease: String? = nil, themes: [String] = [], review: Review? = nil) {
        self.init(text: text, interactionId: interactionId, event: event, kolIds: kolIds, product: product,
                  disease: disease, themes: themes, status: .draft, review: review)
    }
}

extension MedicalInformationRequest {
    /// A draft, open medical information request from the KOL `kolId`.
    public init(kolId: String, interactionId: String? = nil, question: String, products: [String] = [],
                origin: RequestOrigin, originDetail: String = "", recipient: String, deliveryMethod: DeliveryMethod,
                answer: SharedText = "", signature: RequestSignature? = nil, fulfilment: Fulfilment = .open) {
        self.init(kolId: kolId, interactionId: interactionId, question: question, products: products, origin: origin,
                  originDetail: originDetail, recipient: recipient, deliveryMethod: deliveryMethod, answer: answer,
                  signature: signature, fulfilment: fulfilment, status: .draft)
    }
}

extension KolProfile {
    /// A new KOL profile (privacy state active, merged with no other).
    public init(masterId: String? = nil, name: String, nameKana: String? = nil, institution: String,
                department: String? = nil, title: String? = nil, specialty: String? = nil,
                therapeuticAreas: [String] = [], tier: String? = nil, affiliations: [Affiliation] = [],
                societyRoles: [SocietyRole] = [], works: [Work] = [], contact: ContactPreferences = ContactPreferences(),
                consents: [Consent] = [], scientificInterests: SharedText = "") {
        self.init(masterId: masterId, name: name, nameKana: nameKana, institution: institution,
                  department: department, title: title, specialty: specialty, therapeuticAreas: therapeuticAreas,
                  tier: tier, affiliations: affiliations, societyRoles: societyRoles, works: works, contact: contact,
                  consents: consents, scientificInterests: scientificInterests, privacy: .active)
    }
}

extension FollowUp {
    /// An open follow-up of an interaction.
    public init(id: String, description: String, owner: String, due: Int64? = nil) {
        self.init(id: id, description: description, owner: owner, due: due, status: .open)
    }
}

extension PlanActivity {
    /// An open activity of an engagement plan.
    public init(id: String, description: String, owner: String, due: Int64? = nil) {
        self.init(id: id, description: description, owner: owner, due: due, status: .open)
    }
}
