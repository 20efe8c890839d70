// Swift Concurrency adapters for liaison's live queries: each `watch*` call of LiaisonStore as
// an AsyncThrowingStream (the current answer first, then every change; ending the iteration, or
// cancelling its Task, cancels the query's handle), and an observable sync status for SwiftUI.
// Updates come from the library's notifier thread into a buffer of 64; when a slow consumer lets
// it fill, an update is dropped and the next one carries `.reset` (the rows are always complete).
//
// Hand-written beside the generated LiaisonCore.swift; not compiled on the Linux machines the
// project's CI runs on (no Swift toolchain there): build the package on a Mac to check it.

import Foundation

/// Forwards a list query's updates to a stream, turning the update after a dropped one into a reset.
private final class QueryForwarder: QueryObserver, @unchecked Sendable {
    private let continuation: AsyncThrowingStream<QueryUpdate, Error>.Continuation
    private var dropped = false
    private let lock = NSLock()

    init(_ continuation: AsyncThrowingStream<QueryUpdate, Error>.Continuation) {
        self.continuation = continuation
    }

    func onUpdate(update: QueryUpdate) throws {
        lock.lock()
        defer { lock.unlock() }
        let next = dropped ? QueryUpdate(rows: update.rows, change: .reset) : update
        if case .dropped = continuation.yield(next) {
            dropped = true
        } else {
            dropped = false
        }
    }
}

private final class RecordForwarder: RecordObserver, @unchecked Sendable {
    let continuation: AsyncThrowingStream<RecordValue, Error>.Continuation
    init(_ continuation: AsyncThrowingStream<RecordValue, Error>.Continuation) { self.continuation = continuation }
    func onRecord(value: RecordValue) throws { continuation.yield(value) }
}

private final class StatusForwarder: SyncStatusObserver, @unchecked Sendable {
    let onStatus: @Sendable (SyncStatus) -> Void
    init(_ onStatus: @escaping @Sendable (SyncStatus) -> Void) { self.onStatus = onStatus }
    func onStatus(status: SyncStatus) throws { onStatus(status) }
}

extension LiaisonStore {
    private func queryStream(
        _ start: @escaping (QueryObserver) throws -> WatchHandle
    ) -> AsyncThrowingStream<QueryUpdate, Error> {
        AsyncThrowingStream(bufferingPolicy: .bufferingOldest(64)) { continuation in
            do {
                let handle = try start(QueryForwarder(continuation))
                continuation.onTermination = { _ in handle.cancel() }
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }

    /// The KOL list (or those matching `search`), live.
    public func kols(search: String? = nil) -> AsyncThrowingStream<QueryUpdate, Error> {
        queryStream { try self.watchKols(search: search, observer: $0) }
    }

    /// A KOL's interactions, newest first, live.
    public func interactions(kolId: String) -> AsyncThrowingStream<QueryUpdate, Error> {
        queryStream { try self.watchInteractions(kolId: kolId, observer: $0) }
    }

    /// My open follow-ups and activities due before `dueBefore` (ms since the epoch), live.
    public func myOpenTasks(dueBefore: Int64, includeUndated: Bool = false) -> AsyncThrowingStream<QueryUpdate, Error> {
        queryStream { try self.watchMyOpenTasks(dueBefore: dueBefore, includeUndated: includeUndated, observer: $0) }
    }

    /// Medical information requests not yet fulfilled, live.
    public func openMirs() -> AsyncThrowingStream<QueryUpdate, Error> {
        queryStream { try self.watchOpenMirs(observer: $0) }
    }

    /// Drafts not yet submitted (mine only, by default), live.
    public func drafts(mineOnly: Bool = true) -> AsyncThrowingStream<QueryUpdate, Error> {
        queryStream { try self.watchDrafts(mineOnly: mineOnly, observer: $0) }
    }

    /// One record, live: its value with the version to save against (`.missing` once gone).
    public func record(id: String) -> AsyncThrowingStream<RecordValue, Error> {
        AsyncThrowingStream(bufferingPolicy: .bufferingNewest(1)) { continuation in
            do {
                let handle = try self.watchRecord(id: id, observer: RecordForwarder(continuation))
                continuation.onTermination = { _ in handle.cancel() }
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }
}

/// The sync status for SwiftUI: `@StateObject var sync = try SyncStatusModel(store: store)`, then
/// `sync.status?.state` in a view. Updated on the main actor; the live query ends with the object.
@MainActor
public final class SyncStatusModel: ObservableObject {
    @Published public private(set) var status: SyncStatus?
    private var handle: WatchHandle?

    public init(store: LiaisonStore) throws {
        handle = try store.watchSyncStatus(observer: StatusForwarder { [weak self] status in
            Task { @MainActor in self?.status = status }
        })
    }

    deinit {
        handle?.cancel()
    }
}
