// The values a picker offers. Every enum a newer app may extend has an UNKNOWN entry: a value
// written by a newer version of the app, which this one reads as UNKNOWN, shows as unknown, and
// saves back unchanged. An app shows it but never offers it (saving a new record or list item
// with it is refused with LiaisonException.InvalidInput), so pickers list `known`, not `entries`.
// Same as mobile-bindings/swift/Sources/LiaisonCore/Known.swift.
package app.liaison.core

/** The channels this version of the app knows, for pickers (not [InteractionChannel.UNKNOWN]). */
val InteractionChannel.Companion.known: List<InteractionChannel>
    get() = InteractionChannel.entries - InteractionChannel.UNKNOWN

/** The task states this version of the app knows, for pickers (not [TaskStatus.UNKNOWN]). */
val TaskStatus.Companion.known: List<TaskStatus>
    get() = TaskStatus.entries - TaskStatus.UNKNOWN

/** The request states this version of the app knows, for pickers (not [Fulfilment.UNKNOWN]). */
val Fulfilment.Companion.known: List<Fulfilment>
    get() = Fulfilment.entries - Fulfilment.UNKNOWN

/** The attendee kinds this version of the app knows, for pickers (not [AttendeeKind.UNKNOWN]). */
val AttendeeKind.Companion.known: List<AttendeeKind>
    get() = AttendeeKind.entries - AttendeeKind.UNKNOWN

/** The kinds of work this version of the app knows, for pickers (not [WorkKind.UNKNOWN]). */
val WorkKind.Companion.known: List<WorkKind>
    get() = WorkKind.entries - WorkKind.UNKNOWN

/** The privacy states this version of the app knows, for pickers (not [PrivacyState.UNKNOWN]). */
val PrivacyState.Companion.known: List<PrivacyState>
    get() = PrivacyState.entries - PrivacyState.UNKNOWN

/** The request origins this version of the app knows, for pickers (not [RequestOrigin.UNKNOWN]). */
val RequestOrigin.Companion.known: List<RequestOrigin>
    get() = RequestOrigin.entries - RequestOrigin.UNKNOWN

/** The delivery methods this version of the app knows, for pickers (not [DeliveryMethod.UNKNOWN]). */
val DeliveryMethod.Companion.known: List<DeliveryMethod>
    get() = DeliveryMethod.entries - DeliveryMethod.UNKNOWN
