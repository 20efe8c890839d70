// Constructors for new records that leave out what a new record cannot choose: its status (a
// new record is a draft), submission and unlocks (only `submit` and `unlock` set them), a new
// KOL's privacy state (active) and merge links (only `mergeKols` sets them), a new task's status
// (open). Hand-written because uniffi cannot give an enum-typed field a default (see
// ffi/src/types.rs); every other field defaults in the generated constructors already.
//
// Each is a function named like its class, so `Interaction(kolId = k, start = t, channel = c)`
// reads as a constructor. It never competes with the generated constructor: it lacks the
// enum-typed parameter the generated one requires. Compiled with the generated Kotlin by the
// JVM tests (`cargo xtask prepare-binding-tests`) and by the Android module.
package app.liaison.core

/** A draft interaction with a KOL at [start] (milliseconds since the Unix epoch). */
fun Interaction(
    kolId: String,
    start: Long,
    channel: InteractionChannel,
    end: Long? = null,
    location: String? = null,
    attendees: List<Attendee> = listOf(),
    topics: List<Topic> = listOf(),
    summary: SharedText = "",
    materials: List<InteractionMaterial> = listOf(),
    followUps: List<FollowUp> = listOf(),
    insightIds: List<String> = listOf(),
    mirIds: List<String> = listOf(),
): Interaction = Interaction(
    kolId = kolId,
    start = start,
    end = end,
    channel = channel,
    location = location,
    attendees = attendees,
    topics = topics,
    summary = summary,
    materials = materials,
    followUps = followUps,
    insightIds = insightIds,
    mirIds = mirIds,
    status = RecordStatus.DRAFT,
)

/** A draft medical insight about the KOLs in [kolIds]. */
fun MedicalInsight(
    text: SharedText,
    kolIds: List<String> = listOf(),
    interactionId: String? = null,
    event: String? = null,
    product: String? = null,
    disease: String? = null,
    themes: List<String> = listOf(),
    review: Review? = null,
): MedicalInsight = MedicalInsight(
    text = text,
    interactionId = interactionId,
    event = event,
    kolIds = kolIds,
    product = product,
    disease = disease,
    themes = themes,
    status = RecordStatus.DRAFT,
    review = review,
)

/** A draft, open medical information request from the KOL [kolId]. */
fun MedicalInformationRequest(
    kolId: String,
    question: String,
    origin: RequestOrigin,
    recipient: String,
    deliveryMethod: DeliveryMethod,
    interactionId: String? = null,
    products: List<String> = listOf(),
    originDetail: String = "",
    answer: SharedText = "",
    signature: RequestSignature? = null,
    fulfilment: Fulfilment = Fulfilment.OPEN,
): MedicalInformationRequest = MedicalInformationRequest(
    kolId = kolId,
    interactionId = interactionId,
    question = question,
    products = products,
    origin = origin,
    originDetail = originDetail,
    recipient = recipient,
    deliveryMethod = deliveryMethod,
    answer = answer,
    signature = signature,
    fulfilment = fulfilment,
    status = RecordStatus.DRAFT,
)

/** A new KOL profile (privacy state active, merged with no other). */
fun KolProfile(
    name: String,
    institution: String,
    masterId: String? = null,
    nameKana: String? = null,
    department: String? = null,
    title: String? = null,
    specialty: String? = null,
    therapeuticAreas: List<String> = listOf(),
    tier: String? = null,
    affiliations: List<Affiliation> = listOf(),
    societyRoles: List<SocietyRole> = listOf(),
    works: List<Work> = listOf(),
    contact: ContactPreferences = ContactPreferences(),
    consents: List<Consent> = listOf(),
    scientificInterests: SharedText = "",
): KolProfile = KolProfile(
    masterId = masterId,
    name = name,
    nameKana = nameKana,
    institution = institution,
    department = department,
    title = title,
    specialty = specialty,
    therapeuticAreas = therapeuticAreas,
    tier = tier,
    affiliations = affiliations,
    societyRoles = societyRoles,
    works = works,
    contact = contact,
    consents = consents,
    scientificInterests = scientificInterests,
    privacy = PrivacyState.ACTIVE,
)

/** An open follow-up of an interaction. */
fun FollowUp(id: String, description: String, owner: String, due: Long? = null): FollowUp =
    FollowUp(id = id, description = description, owner = owner, due = due, status = TaskStatus.OPEN)

/** An open activity of an engagement plan. */
fun PlanActivity(id: String, description: String, owner: String, due: Long? = null): PlanActivity =
    PlanActivity(id = id, description = description, owner = owner, due = due, status = TaskStatus.OPEN)
