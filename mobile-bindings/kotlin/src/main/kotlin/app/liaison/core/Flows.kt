// kotlinx.coroutines adapters for liaison's live queries: each `watch*` call of LiaisonStore as a
// cold Flow. Collecting starts the live query (its first emission is the current answer);
// cancelling the collector cancels the query's handle, so no more callbacks arrive. Updates come
// from the library's notifier thread into a buffer of 64; when a slow collector lets it fill, an
// update is dropped and the next carries a Reset (the rows are always complete). Record and
// status flows are conflated (each emission is a whole value). Collect where the screen needs
// it (in a `viewModelScope`, on Dispatchers.Main).
//
// Hand-written, compiled with the generated Kotlin by the JVM tests
// (`cargo xtask prepare-binding-tests`) and by the Android module.
package app.liaison.core

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.conflate
import kotlinx.coroutines.flow.map

/** Rows of a live list query; [change] is relative to the previous emission. */
data class LiveRows<T>(val rows: List<T>, val change: RowChange)

private fun LiaisonStore.queryFlow(start: LiaisonStore.(QueryObserver) -> WatchHandle): Flow<QueryUpdate> =
    callbackFlow {
        // When the buffer is full an update is dropped; the next one then carries all rows and
        // a Reset, since its diff is relative to the dropped one.
        var dropped = false
        val handle = start(object : QueryObserver {
            override fun onUpdate(update: QueryUpdate) {
                val u = if (dropped) update.copy(change = RowChange.Reset) else update
                dropped = trySend(u).isFailure
            }
        })
        awaitClose { handle.cancel() }
    }

private fun <T> Flow<QueryUpdate>.rowsOf(pick: (QueryRows) -> List<T>?): Flow<LiveRows<T>> =
    map { LiveRows(pick(it.rows) ?: emptyList(), it.change) }

/** The KOL list (or those matching [search]), live. */
fun LiaisonStore.kolsFlow(search: String? = null): Flow<LiveRows<KolSummary>> =
    queryFlow { watchKols(search, it) }.rowsOf { (it as? QueryRows.Kols)?.rows }

/** A KOL's interactions, newest first, live. */
fun LiaisonStore.interactionsFlow(kolId: String): Flow<LiveRows<InteractionRow>> =
    queryFlow { watchInteractions(kolId, it) }.rowsOf { (it as? QueryRows.Interactions)?.rows }

/** My open follow-ups and activities due before [dueBefore] (ms since the epoch), live. */
fun LiaisonStore.myOpenTasksFlow(dueBefore: Long, includeUndated: Boolean = false): Flow<LiveRows<TaskRow>> =
    queryFlow { watchMyOpenTasks(dueBefore, includeUndated, it) }.rowsOf { (it as? QueryRows.Tasks)?.rows }

/** Medical information requests not yet fulfilled, live. */
fun LiaisonStore.openMirsFlow(): Flow<LiveRows<MirRow>> =
    queryFlow { watchOpenMirs(it) }.rowsOf { (it as? QueryRows.Mirs)?.rows }

/** Drafts not yet submitted (mine only, by default), live. */
fun LiaisonStore.draftsFlow(mineOnly: Boolean = true): Flow<LiveRows<DraftRow>> =
    queryFlow { watchDrafts(mineOnly, it) }.rowsOf { (it as? QueryRows.Drafts)?.rows }

/** One record, live: its value with the version to save against ([RecordValue.Missing] once gone). */
fun LiaisonStore.recordFlow(id: String): Flow<RecordValue> = callbackFlow {
    val handle = watchRecord(id, object : RecordObserver {
        override fun onRecord(value: RecordValue) {
            trySend(value)
        }
    })
    awaitClose { handle.cancel() }
}.conflate()

/** The sync status, live: the current one first. */
fun LiaisonStore.syncStatusFlow(): Flow<SyncStatus> = callbackFlow {
    val handle = watchSyncStatus(object : SyncStatusObserver {
        override fun onStatus(status: SyncStatus) {
            trySend(status)
        }
    })
    awaitClose { handle.cancel() }
}.conflate()

/** The colleagues present on a record, live (the whole list after each change). */
fun LiaisonStore.presenceFlow(id: String): Flow<List<PresenceEntry>> = callbackFlow {
    val handle = watchPresence(id, object : PresenceObserver {
        override fun onPresence(present: List<PresenceEntry>) {
            trySend(present)
        }
    })
    awaitClose { handle.cancel() }
}.conflate()
