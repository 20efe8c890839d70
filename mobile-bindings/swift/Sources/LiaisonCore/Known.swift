// The values a picker offers. Every enum a newer app may extend has an `.unknown` case: a value
// written by a newer version of the app, which this one reads as `.unknown`, shows as unknown,
// and saves back unchanged. An app shows it but never offers it (saving a new record or list
// item with it throws `LiaisonError.InvalidInput`), so pickers list `known`, not `allCases`.
// Same as mobile-bindings/kotlin/src/main/kotlin/app/liaison/core/Known.kt.

extension InteractionChannel {
    /// The channels this version of the app knows, for pickers (not `.unknown`).
    public static var known: [InteractionChannel] { allCases.filter { $0 != .unknown } }
}

extension TaskStatus {
    /// The task states this version of the app knows, for pickers (not `.unknown`).
    public static var known: [TaskStatus] { allCases.filter { $0 != .unknown } }
}

extension Fulfilment {
    /// The request states this version of the app knows, for pickers (not `.unknown`).
    public static var known: [Fulfilment] { allCases.filter { $0 != .unknown } }
}

extension AttendeeKind {
    /// The attendee kinds this version of the app knows, for pickers (not `.unknown`).
    public static var known: [AttendeeKind] { allCases.filter { $0 != .unknown } }
}

extension WorkKind {
    /// The kinds of work this version of the app knows, for pickers (not `.unknown`).
    public static var known: [WorkKind] { allCases.filter { $0 != .unknown } }
}

extension PrivacyState {
    /// The privacy states this version of the app knows, for pickers (not `.unknown`).
    public static var known: [PrivacyState] { allCases.filter { $0 != .unknown } }
}

extension RequestOrigin {
    /// The request origins this version of the app knows, for pickers (not `.unknown`).
    public static var known: [RequestOrigin] { allCases.filter { $0 != .unknown } }
}

extension DeliveryMethod {
    /// The delivery methods this version of the app knows, for pickers (not `.unknown`).
    public static var known: [DeliveryMethod] { allCases.filter { $0 != .unknown } }
}
