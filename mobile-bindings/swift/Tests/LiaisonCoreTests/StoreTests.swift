// Runs with `swift test` on a Mac after ./build-xcframework.sh (not on the Linux CI machine,
// where the same scenarios run from Kotlin and Python against a real relay).
import XCTest
@testable import LiaisonCore

final class StoreTests: XCTestCase {
    func testCreateListAndErrors() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try await LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        let kol = try await store.createKol(profile: KolProfile(name: "Dr. Aiko Tanaka", institution: "Osaka University Hospital"))
        let planId = try await store.createPlan(plan: EngagementPlan(kolId: kol, title: "FY27", notes: "Agenda: "))
        try await store.splicePlanNotes(planId: planId, index: 0, deleteCount: 0, insert: "患者 ")
        let read = try await store.getPlan(id: planId)
        XCTAssertEqual(read.plan.notes, "患者 Agenda: ")
        var form = read.plan
        form.title = "FY27, saved"
        try await store.updatePlan(id: planId, plan: form, version: read.version)
        let saved = try await store.getPlan(id: planId)
        XCTAssertEqual(saved.plan.title, "FY27, saved")
        let kols = try await store.listKols()
        XCTAssertEqual(kols.count, 1)
        // XCTAssertThrowsError takes no async expression: catch by hand.
        do {
            _ = try await store.getKol(id: "not-an-id")
            XCTFail("expected InvalidInput")
        } catch LiaisonError.InvalidInput {
        }
        do {
            try await store.splicePlanNotes(planId: planId, index: -1, deleteCount: 0, insert: "x")
            XCTFail("expected InvalidInput")
        } catch LiaisonError.InvalidInput {
        }
    }

    func testNewRecordsNeedOnlyTheFieldsThatMatter() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try await LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        let kol = try await store.createKol(profile: KolProfile(name: "Dr. Defaults", institution: "Clinic"))
        let visit = try await store.createInteraction(interaction: Interaction(kolId: kol, start: 1_700_000_000_000, channel: .phone))
        let readVisit = try await store.getInteraction(id: visit)
        XCTAssertEqual(readVisit.interaction.status, .draft)
        let insight = try await store.createInsight(insight: MedicalInsight(text: "Prefers shorter regimens", kolIds: [kol]))
        let readInsight = try await store.getInsight(id: insight)
        XCTAssertEqual(readInsight.insight.kolIds, [kol])
        let request = try await store.createRequest(request: MedicalInformationRequest(
            kolId: kol, question: "Dosing in renal impairment?", origin: .unsolicited, recipient: "Dr. Defaults",
            deliveryMethod: .email))
        let readRequest = try await store.getRequest(id: request)
        XCTAssertEqual(readRequest.request.fulfilment, .open)
        XCTAssertEqual(FollowUp(id: "f1", description: "Send the paper", owner: "alice").status, .open)
        XCTAssertEqual(InteractionChannel.allCases.count, 5)
        let profile = try await store.getKol(id: kol).profile
        XCTAssertEqual(profile.privacy, .active)
        let decoded = try JSONDecoder().decode(KolProfile.self, from: JSONEncoder().encode(profile))
        XCTAssertEqual(decoded, profile)
    }

    /// Every store call is `async` and runs on the library's threads. Cancelling the Task that
    /// awaits one stops the wait at once (the bindings are patched to cancel the Rust future:
    /// xtask/src/swift_cancel.rs); a write that had begun is stored whole, one that had not
    /// never runs.
    func testACancelledTaskStopsWaitingAndTheRecordIsWholeOrAbsent() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try await LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        let interests = String(repeating: "Immuno-oncology, biomarkers; ", count: 1_700)
        let task = Task {
            try await store.createKol(profile: KolProfile(name: "Dr. Cancelled", institution: "Clinic",
                                                          scientificInterests: interests))
        }
        task.cancel()
        do {
            _ = try await task.value
        } catch is CancellationError {
        }
        // Writes apply in call order: once this one is back, the cancelled one ran or never will.
        _ = try await store.createKol(profile: KolProfile(name: "Dr. After", institution: "Clinic"))
        let kols = try await store.listKols()
        for kol in kols where kol.name == "Dr. Cancelled" {
            let read = try await store.getKol(id: kol.id)
            XCTAssertEqual(read.profile.scientificInterests, interests)
        }
        XCTAssertLessThanOrEqual(kols.filter { $0.name == "Dr. Cancelled" }.count, 1)
        XCTAssertTrue(kols.contains { $0.name == "Dr. After" })
    }

    func testWaitWithoutSyncFails() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try await LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        do {
            _ = try await store.waitUntilSynced(timeoutMs: 100)
            XCTFail("expected an error: sync is not running")
        } catch LiaisonError.Sync {
        }
    }
}
