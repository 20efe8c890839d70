//! Text fields people edit together: splices at UTF-16 indexes (what text views report) and
//! cursors that stay with their character as colleagues' edits arrive, for every shared text of
//! every record, not only a plan's notes.

use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value};
use liaison_core::model::{EngagementPlan, Interaction, KolProfile, MedicalInformationRequest, MedicalInsight};
use liaison_core::{DocStore, DocumentId};

use crate::error::LiaisonError;
use crate::store::{LiaisonStore, parse_id, utf16_count, utf16_to_byte};

/// A text field edited per character (not `TextField`, which SwiftUI and Compose both name a
/// text input view).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SharedTextField {
    /// An engagement plan's notes.
    PlanNotes,
    /// An interaction's summary.
    InteractionSummary,
    /// The discussion of one topic of an interaction, by the topic's id.
    TopicDiscussion { topic_id: String },
    /// A medical insight's text.
    InsightText,
    /// A medical information request's answer.
    RequestAnswer,
    /// A KOL profile's scientific interests.
    KolScientificInterests,
}

impl SharedTextField {
    /// The text object in a document, or `WrongKind` (`NotFound` for an unknown topic).
    fn object(&self, doc: &Automerge) -> Result<ObjId, LiaisonError> {
        let wrong = || LiaisonError::WrongKind("the record has no such text field".into());
        let map = |parent: &ObjId, key: &str| match doc.get(parent, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        };
        let record = map(&automerge::ROOT, "record").ok_or_else(wrong)?;
        let (parent, key) = match self {
            Self::PlanNotes => (record, "notes"),
            Self::InteractionSummary => (record, "summary"),
            Self::InsightText => (record, "text"),
            Self::RequestAnswer => (record, "answer"),
            Self::KolScientificInterests => (record, "scientific_interests"),
            Self::TopicDiscussion { topic_id } => {
                let Ok(Some((Value::Object(ObjType::List), topics))) = doc.get(&record, "topics") else {
                    return Err(wrong());
                };
                let topic = (0..doc.length(&topics))
                    .filter_map(|i| match doc.get(&topics, i) {
                        Ok(Some((Value::Object(ObjType::Map), t))) => Some(t),
                        _ => None,
                    })
                    .find(|t| {
                        matches!(doc.get(t, "id"), Ok(Some((Value::Scalar(s), _))) if s.as_str() == Some(topic_id.as_str()))
                    })
                    .ok_or_else(|| LiaisonError::NotFound("no topic with that id".into()))?;
                (topic, "discussion")
            }
        };
        match doc.get(&parent, key)? {
            Some((Value::Object(ObjType::Text), id)) => Ok(id),
            _ => Err(wrong()),
        }
    }
}

/// Splices `text` at UTF-16 indexes.
fn splice(text: &mut autosurgeon::Text, at: Splice) -> Result<(), LiaisonError> {
    let value = text.as_str();
    let start = utf16_to_byte(value, at.index)?;
    let end = at
        .index
        .checked_add(at.delete_count)
        .ok_or_else(|| LiaisonError::InvalidInput("the range is out of bounds".into()))
        .and_then(|e| utf16_to_byte(value, e))?;
    let deleted =
        isize::try_from(end - start).map_err(|_| LiaisonError::InvalidInput("the range is out of bounds".into()))?;
    text.splice(start, deleted, at.insert);
    Ok(())
}

/// One splice, in UTF-16 code units.
struct Splice {
    index: usize,
    delete_count: usize,
    insert: String,
}

#[uniffi::export(async_runtime = "tokio")]
impl LiaisonStore {
    /// Replaces `delete_count` UTF-16 code units of a record's text field at `index` with
    /// `insert`: what a text view reports. Concurrent splices by colleagues merge per character.
    /// `WrongKind` if the record has no such field; `Locked` for a submitted record;
    /// `InvalidInput` for a negative index or count, or one past the end or inside a character.
    pub async fn splice_text(
        &self,
        id: String,
        field: SharedTextField,
        index: i32,
        delete_count: i32,
        insert: String,
    ) -> Result<(), LiaisonError> {
        let doc = parse_id(&id)?;
        let at = Splice {
            index: utf16_count(index, "the index")?,
            delete_count: utf16_count(delete_count, "the delete count")?,
            insert,
        };
        self.write(move |store, sync| {
            splice_field(store, &doc, field, at)?;
            sync.changed(doc);
            Ok(())
        })
        .await
    }

    /// A cursor at UTF-16 `index` of a record's text field that stays with its character as
    /// colleagues' edits arrive. Resolve it with `text_cursor_position`.
    pub async fn text_cursor(&self, id: String, field: SharedTextField, index: i32) -> Result<String, LiaisonError> {
        let index = utf16_count(index, "the index")?;
        let doc = parse_id(&id)?;
        self.read(move |store| {
            let doc = store.load(&doc)?;
            let obj = field.object(&doc)?;
            let text = doc.text(&obj)?;
            let byte = utf16_to_byte(&text, index)?;
            let position = if byte == text.len() { automerge::CursorPosition::End } else { byte.into() };
            Ok(doc.get_cursor(&obj, position, None)?.to_string())
        })
        .await
    }

    /// Where a cursor from `text_cursor` is now, as a UTF-16 index.
    pub async fn text_cursor_position(
        &self,
        id: String,
        field: SharedTextField,
        cursor: String,
    ) -> Result<i32, LiaisonError> {
        let cursor = automerge::Cursor::try_from(cursor.as_str())
            .map_err(|_| LiaisonError::InvalidInput("the cursor is malformed".into()))?;
        let doc = parse_id(&id)?;
        self.read(move |store| {
            let doc = store.load(&doc)?;
            let obj = field.object(&doc)?;
            let text = doc.text(&obj)?;
            let byte = doc.get_cursor_position(&obj, &cursor, None)?.min(text.len());
            let prefix = text.get(..byte).unwrap_or(&text);
            i32::try_from(prefix.encode_utf16().count()).map_err(|_| LiaisonError::InvalidInput("text too long".into()))
        })
        .await
    }
}

/// Applies one splice to a record's text field, in one write.
fn splice_field(store: &DocStore, doc: &DocumentId, field: SharedTextField, at: Splice) -> Result<(), LiaisonError> {
    let done = match field {
        SharedTextField::PlanNotes => store.update(doc, |r: &mut EngagementPlan| splice(&mut r.notes, at))?,
        SharedTextField::InteractionSummary => store.update(doc, |r: &mut Interaction| splice(&mut r.summary, at))?,
        SharedTextField::TopicDiscussion { topic_id } => store.update(doc, |r: &mut Interaction| {
            let topic = r.topics.iter_mut().find(|t| t.id == topic_id);
            let topic = topic.ok_or_else(|| LiaisonError::NotFound("no topic with that id".into()))?;
            splice(&mut topic.discussion, at)
        })?,
        SharedTextField::InsightText => store.update(doc, |r: &mut MedicalInsight| splice(&mut r.text, at))?,
        SharedTextField::RequestAnswer => {
            store.update(doc, |r: &mut MedicalInformationRequest| splice(&mut r.answer, at))?
        }
        SharedTextField::KolScientificInterests => {
            store.update(doc, |r: &mut KolProfile| splice(&mut r.scientific_interests, at))?
        }
    };
    done?;
    Ok(())
}
