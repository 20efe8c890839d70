//! The rows of `policy.rs`'s `validate_refuses_each_violation_with_its_code`: one or more per refusal code,
//! then honest edits that must pass. Each builds its `before` and `after` from real automerge
//! changes: core's model functions where an honest app would use them, raw transactions under
//! chosen actors where a hostile device would not.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ActorId, Automerge, ChangeHash, ObjType, ScalarValue};
use liaison_core::model::{Interaction, Kind, Submission, Unlock, set_legal_hold, submit_record, update_record};

use crate::common::{
    ADMIN_A, Edit, ITO, KATO, MORI, NOW, SATO, Who, created, obj, plan_with_incomplete_envelope, put_author, raw_change,
};

/// What a row expects of `validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Accepted,
    /// Every change sent is refused with this code.
    Refused(&'static str),
    /// Exactly these changes are refused, with this code.
    Only(&'static str, Vec<ChangeHash>),
}

/// One row of the `validate` table: who sends which changes, and what the relay must answer.
pub struct Row {
    pub name: &'static str,
    /// `None`: a connection without a principal.
    pub sender: Option<Who>,
    pub edit: Edit,
    pub expect: Expect,
}

fn row(name: &'static str, sender: Who, edit: Edit, expect: Expect) -> Row {
    Row { name, sender: Some(sender), edit, expect }
}

/// A raw change under `actor`, as a closure for [`Edit::of`].
fn raw(actor: ActorId, f: impl FnOnce(&mut Transaction<'_>, &Automerge)) -> impl FnOnce(&mut Automerge) {
    move |doc| raw_change(doc, &actor, f)
}

/// A raw change by `who` setting one key of the object at `path`.
fn put(
    who: Who,
    path: &'static [&'static str],
    key: &'static str,
    value: impl Into<ScalarValue>,
) -> impl FnOnce(&mut Automerge) {
    let value = value.into();
    raw(who.actor(), move |tx, doc| {
        tx.put(obj(doc, path), key, value).unwrap();
    })
}

/// An honest edit of an interaction's summary through the model, by `who`'s first install.
fn summary_edit(who: Who) -> impl FnOnce(&mut Automerge) {
    move |doc| {
        update_record(doc, &who.identity(), NOW, |i: &mut Interaction| i.summary.splice(0, 0, "Edited. ")).unwrap();
    }
}

fn with(doc: &Automerge, f: impl FnOnce(&mut Automerge)) -> Automerge {
    let mut doc = doc.clone();
    f(&mut doc);
    doc
}

pub fn rows() -> Vec<Row> {
    let mut rows = refusals_before_the_guard();
    rows.extend(creations());
    rows.extend(envelope_changes());
    rows.extend(authorship_and_submission());
    rows.extend(honest());
    rows
}

/// `unauthenticated`, `locked`, `foreign-actor`: decided before the document is read.
fn refusals_before_the_guard() -> Vec<Row> {
    let interaction = created(&SATO, "east", Kind::Interaction);
    let submitted = with(&interaction, |d| {
        submit_record::<Interaction>(d, &SATO.identity(), NOW).unwrap();
    });
    // Ito has written before: his actor has an `authors` entry, so only the actor check stands
    // between Sato and an upload of Ito's change.
    let ito_wrote = with(&interaction, summary_edit(ITO));
    let mixed = with(&ito_wrote, |d| {
        summary_edit(SATO)(d);
        summary_edit(ITO)(d);
    });
    let ito_change = mixed.get_heads()[0];
    vec![
        Row {
            name: "unauthenticated: a connection without a principal",
            sender: None,
            edit: Edit::of(&interaction, summary_edit(SATO)),
            expect: Expect::Refused("unauthenticated"),
        },
        row(
            "locked: a raw edit of a submitted record's summary",
            SATO,
            Edit::of(
                &submitted,
                raw(SATO.actor(), |tx, d| {
                    tx.splice_text(obj(d, &["record", "summary"]), 0, 0, "Edited. ").unwrap();
                }),
            ),
            Expect::Refused("locked"),
        ),
        row(
            "foreign-actor: a teammate's change uploaded by someone else",
            SATO,
            Edit::of(&ito_wrote, summary_edit(ITO)),
            Expect::Refused("foreign-actor"),
        ),
        row(
            "foreign-actor: only the foreign change of an upload is refused",
            SATO,
            Edit { before: ito_wrote.clone(), after: mixed },
            Expect::Only("foreign-actor", vec![ito_change]),
        ),
        row(
            "foreign-actor: an actor id outside the scheme",
            SATO,
            Edit::of(
                &interaction,
                raw(ActorId::random(), |tx, d| {
                    tx.put(obj(d, &["record"]), "location", "Osaka").unwrap();
                }),
            ),
            Expect::Refused("foreign-actor"),
        ),
    ]
}

/// `not-a-record`, `bad-creation`, `forged-author`, `forbidden`, `legal-hold` on a new document.
fn creations() -> Vec<Row> {
    let plan = created(&SATO, "east", Kind::EngagementPlan);
    let mut plain = Automerge::new();
    raw_change(&mut plain, &SATO.actor(), |tx, _| {
        tx.put(automerge::ROOT, "hello", "world").unwrap();
    });
    let interaction = created(&SATO, "east", Kind::Interaction);
    vec![
        row(
            "not-a-record: a creation whose envelope has only tenant and team",
            SATO,
            Edit::creation(plan_with_incomplete_envelope(SATO)),
            Expect::Refused("not-a-record"),
        ),
        row("not-a-record: a plain automerge document", SATO, Edit::creation(plain), Expect::Refused("not-a-record")),
        row(
            "bad-creation: created_by names someone else",
            SATO,
            Edit::creation(with(&plan, put(SATO, &["envelope", "created_by"], "user", ITO.user))),
            Expect::Refused("bad-creation"),
        ),
        row(
            "bad-creation: created_by names another device of the writer",
            SATO,
            Edit::creation(with(&plan, put(SATO, &["envelope", "created_by"], "device", "another-device"))),
            Expect::Refused("bad-creation"),
        ),
        row(
            // Created and submitted offline before the first sync, by the writer: the relay
            // demo does this (a creation is judged as a submit from a fresh draft).
            "accepted: created and submitted offline by the writer",
            SATO,
            Edit::creation(with(&interaction, |d| {
                submit_record::<Interaction>(d, &SATO.identity(), NOW).unwrap();
            })),
            Expect::Accepted,
        ),
        // The guard's tenant check answers before the policy's access check could say
        // `forbidden`: a creation in another tenant's name is a bad creation.
        row(
            "bad-creation: created in another tenant's name",
            SATO,
            Edit::creation(with(&plan, put(SATO, &["envelope"], "tenant", "pharma-b"))),
            Expect::Refused("bad-creation"),
        ),
        row(
            "forged-author: a creation with an entry keyed by a teammate's actor",
            SATO,
            Edit::creation(with(
                &plan,
                raw(SATO.actor(), |tx, d| put_author(tx, d, &ITO.actor().to_hex_string(), SATO)),
            )),
            Expect::Refused("forged-author"),
        ),
        row(
            "forbidden: created in a team the writer is not in",
            SATO,
            Edit::creation(created(&SATO, "west", Kind::EngagementPlan)),
            Expect::Refused("forbidden"),
        ),
        row(
            "forbidden: a manager creates an interaction",
            KATO,
            Edit::creation(created(&KATO, "east", Kind::Interaction)),
            Expect::Refused("forbidden"),
        ),
        row(
            "legal-hold: an MSL creates a record under legal hold",
            SATO,
            Edit::creation(with(&plan, |d| {
                set_legal_hold(d, &SATO.identity(), NOW, true).unwrap();
            })),
            Expect::Refused("legal-hold"),
        ),
    ]
}

/// `not-a-record` on an update, `owner-change`, `envelope-change`, `legal-hold`.
fn envelope_changes() -> Vec<Row> {
    let plan = created(&SATO, "east", Kind::EngagementPlan);
    let interaction = created(&SATO, "east", Kind::Interaction);
    let question = created(&SATO, "east", Kind::MedicalInformationRequest);
    let submitted = with(&interaction, |d| {
        submit_record::<Interaction>(d, &SATO.identity(), NOW).unwrap();
    });
    let hold = |who: Who| {
        move |d: &mut Automerge| {
            set_legal_hold(d, &who.identity(), NOW, true).unwrap();
        }
    };
    vec![
        row(
            "not-a-record: an update deletes the plan's title",
            SATO,
            Edit::of(&plan, raw(SATO.actor(), |tx, d| tx.delete(obj(d, &["record"]), "title").unwrap())),
            Expect::Refused("not-a-record"),
        ),
        row(
            "owner-change: the tenant",
            SATO,
            Edit::of(&plan, put(SATO, &["envelope"], "tenant", "pharma-b")),
            Expect::Refused("owner-change"),
        ),
        row(
            "owner-change: the team",
            SATO,
            Edit::of(&plan, put(SATO, &["envelope"], "team", "west")),
            Expect::Refused("owner-change"),
        ),
        // The record hydrates as a medical insight too (it gained an insight's fields): only the kind
        // changed.
        row(
            "envelope-change: the kind",
            SATO,
            Edit::of(
                &plan,
                raw(SATO.actor(), |tx, d| {
                    tx.put(automerge::ROOT, "kind", Kind::MedicalInsight.as_str()).unwrap();
                    let record = obj(d, &["record"]);
                    tx.put_object(&record, "text", ObjType::Text).unwrap();
                    for key in ["interaction_id", "event", "product", "disease", "submission", "review"] {
                        tx.put(&record, key, ScalarValue::Null).unwrap();
                    }
                }),
            ),
            Expect::Refused("envelope-change"),
        ),
        row(
            "envelope-change: created_by",
            SATO,
            Edit::of(&plan, put(SATO, &["envelope", "created_by"], "user", ITO.user)),
            Expect::Refused("envelope-change"),
        ),
        row(
            "envelope-change: created_at",
            SATO,
            Edit::of(&plan, put(SATO, &["envelope"], "created_at", NOW - 86_400_000)),
            Expect::Refused("envelope-change"),
        ),
        row(
            "envelope-change: retention_class",
            SATO,
            Edit::of(&plan, put(SATO, &["envelope"], "retention_class", "short")),
            Expect::Refused("envelope-change"),
        ),
        row("legal-hold: an MSL sets it", SATO, Edit::of(&interaction, hold(SATO)), Expect::Refused("legal-hold")),
        row("legal-hold: a tenant admin sets it", ADMIN_A, Edit::of(&interaction, hold(ADMIN_A)), Expect::Accepted),
        row("legal-hold: medical information sets it", MORI, Edit::of(&question, hold(MORI)), Expect::Accepted),
        // A submitted record refuses every edit but a legal hold: litigation holds submitted
        // records above all.
        row(
            "legal-hold: a tenant admin sets it on a submitted record",
            ADMIN_A,
            Edit::of(&submitted, hold(ADMIN_A)),
            Expect::Accepted,
        ),
        row(
            "legal-hold: an MSL sets it on a submitted record",
            SATO,
            Edit::of(&submitted, hold(SATO)),
            Expect::Refused("legal-hold"),
        ),
        row(
            "locked: a legal hold together with another edit of a submitted record",
            ADMIN_A,
            Edit::of(&submitted, move |d: &mut Automerge| {
                hold(ADMIN_A)(d);
                raw_change(d, &ADMIN_A.actor(), |tx, d| {
                    tx.splice_text(obj(d, &["record", "summary"]), 0, 0, "Edited. ").unwrap();
                });
            }),
            Expect::Refused("locked"),
        ),
    ]
}

/// `forged-author`, `forged-submission`, and the `not-a-record` a hand-set status gets.
fn authorship_and_submission() -> Vec<Row> {
    let interaction = created(&SATO, "east", Kind::Interaction);
    let ito_wrote = with(&interaction, summary_edit(ITO));
    let ito_key = ITO.actor().to_hex_string();
    let second_install = SATO.actor_of_install(&[2; 8]);
    let submission = |user: Who| Submission { at: NOW, user: user.user.into(), device: user.device() };
    let set_submission = move |user: Who| {
        move |d: &mut Automerge| {
            update_record(d, &SATO.identity(), NOW, |i: &mut Interaction| i.submission = Some(submission(user)))
                .unwrap();
        }
    };
    // A submission and `submitted` status naming `user` on `device`, set through the model.
    let submitted_as = |user: &'static str, device: String| {
        move |d: &mut Automerge| {
            update_record(d, &SATO.identity(), NOW, |i: &mut Interaction| {
                i.submission = Some(Submission { at: NOW, user: user.into(), device });
            })
            .unwrap();
            put(SATO, &["record"], "status", "submitted")(d);
        }
    };
    let third_install = SATO.actor_of_install(&[3; 8]);
    let set_status = put(SATO, &["record"], "status", "submitted");
    vec![
        row(
            "forged-author: an entry keyed by a teammate's actor",
            SATO,
            Edit::of(
                &interaction,
                raw(SATO.actor(), {
                    let key = ito_key.clone();
                    move |tx, d| put_author(tx, d, &key, SATO)
                }),
            ),
            Expect::Refused("forged-author"),
        ),
        row(
            "forged-author: an entry for the writer's own new actor naming a teammate",
            SATO,
            Edit::of(
                &interaction,
                raw(second_install.clone(), move |tx, d| put_author(tx, d, &second_install.to_hex_string(), ITO)),
            ),
            Expect::Refused("forged-author"),
        ),
        row(
            "forged-author: an entry for the writer's own new actor naming another of the writer's devices",
            SATO,
            Edit::of(
                &interaction,
                raw(third_install.clone(), move |tx, d| {
                    let entry =
                        tx.put_object(obj(d, &["authors"]), third_install.to_hex_string(), ObjType::Map).unwrap();
                    tx.put(&entry, "user", SATO.user).unwrap();
                    tx.put(&entry, "device", "another-device").unwrap();
                    tx.put(&entry, "install", "0303030303030303").unwrap();
                }),
            ),
            Expect::Refused("forged-author"),
        ),
        row(
            "forged-author: rewriting a teammate's entry",
            SATO,
            Edit::of(
                &ito_wrote,
                raw(SATO.actor(), {
                    let key = ito_key.clone();
                    move |tx, d| tx.put(obj(d, &["authors", &key]), "user", SATO.user).unwrap()
                }),
            ),
            Expect::Refused("forged-author"),
        ),
        row(
            "forged-author: deleting a teammate's entry",
            SATO,
            Edit::of(
                &ito_wrote,
                raw(SATO.actor(), move |tx, d| tx.delete(obj(d, &["authors"]), ito_key.as_str()).unwrap()),
            ),
            Expect::Refused("forged-author"),
        ),
        row(
            "forged-submission: a submission naming a teammate",
            SATO,
            Edit::of(&interaction, |d| {
                set_submission(ITO)(d);
                set_status(d);
            }),
            Expect::Refused("forged-submission"),
        ),
        row(
            "forged-submission: a submission naming the writer on another device",
            SATO,
            Edit::of(&interaction, submitted_as(SATO.user, "another-device".into())),
            Expect::Refused("forged-submission"),
        ),
        row(
            "forged-submission: a submission naming a teammate on the writer's device",
            SATO,
            Edit::of(&interaction, submitted_as(ITO.user, SATO.device())),
            Expect::Refused("forged-submission"),
        ),
        row(
            "forged-submission: a creation submitted in a teammate's name",
            SATO,
            Edit::creation(with(&interaction, submitted_as(ITO.user, ITO.device()))),
            Expect::Refused("forged-submission"),
        ),
        row(
            "forged-submission: a submission recorded while the record stays a draft",
            SATO,
            Edit::of(&interaction, set_submission(SATO)),
            Expect::Refused("forged-submission"),
        ),
        // The record's own validation refuses a submitted status without a submission before
        // the submit rule is reached.
        row(
            "not-a-record: status submitted without a submission",
            SATO,
            Edit::of(&interaction, put(SATO, &["record"], "status", "submitted")),
            Expect::Refused("not-a-record"),
        ),
        row(
            "forged-submission: an unlock entry added from a device",
            SATO,
            Edit::of(&interaction, |d| {
                let unlock = Unlock { id: "u1".into(), at: NOW, user: ADMIN_A.user.into(), reason: "typo".into() };
                update_record(d, &SATO.identity(), NOW, |i: &mut Interaction| i.unlocks.push(unlock)).unwrap();
            }),
            Expect::Refused("forged-submission"),
        ),
    ]
}

/// What honest apps send: all accepted.
fn honest() -> Vec<Row> {
    let interaction = created(&SATO, "east", Kind::Interaction);
    let second_install = liaison_core::Identity { install: [2; 8], ..SATO.identity() };
    vec![
        row("accepted: an honest update", SATO, Edit::of(&interaction, summary_edit(SATO)), Expect::Accepted),
        row("accepted: a teammate's first edit", ITO, Edit::of(&interaction, summary_edit(ITO)), Expect::Accepted),
        row(
            "accepted: the first edit of the writer's second install",
            SATO,
            Edit::of(&interaction, |d| {
                update_record(d, &second_install, NOW, |i: &mut Interaction| i.location = Some("Osaka".into()))
                    .unwrap();
            }),
            Expect::Accepted,
        ),
        row(
            "accepted: the writer submits",
            SATO,
            Edit::of(&interaction, |d| {
                submit_record::<Interaction>(d, &SATO.identity(), NOW).unwrap();
            }),
            Expect::Accepted,
        ),
        row(
            "accepted: an honest creation",
            SATO,
            Edit::creation(created(&SATO, "east", Kind::EngagementPlan)),
            Expect::Accepted,
        ),
    ]
}
