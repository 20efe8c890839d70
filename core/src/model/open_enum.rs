//! Enums that a newer app may extend: forward compatibility for the records' closed sets of
//! values (a channel, a task status, an attendee kind...).
//!
//! A newer app may add a value (say an `"sms"` channel) without a schema bump. An older build
//! reads a name it does not know as `Unknown`, keeps working, and writes nothing for it: the
//! stored name stays as it is when the record is saved back, and a colleague's newer app still
//! reads `"sms"`. So `Unknown` is never written:
//! - its reconcile leaves the stored value alone;
//! - a record whose field would be `Unknown` with nothing stored under it (a new record, a new
//!   list item) does not hydrate after the write, which [`transact_record`] refuses (`Invalid`).
//!
//! Apps see `Unknown` as one more case (`UNKNOWN` in Kotlin, `.unknown` in Swift) to show as
//! "unknown" and leave alone; `known()` lists the others, for pickers.
//!
//! [`transact_record`]: super::document

/// Declares an open enum: the listed variants with their stored names, plus `Unknown`, with
/// `Hydrate`, `Reconcile`, `name`, `parse` and `known`.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[doc = $doc])* $variant, )+
            /// A value written by a newer app, which this build does not know. Reading keeps
            /// working; saving the record leaves the stored value as it is. A new record or list
            /// item cannot be written with it (`ModelError::Invalid`).
            Unknown,
        }

        impl $name {
            /// Every value this build knows, in declaration order (`Unknown` is not one).
            pub const fn known() -> &'static [Self] {
                &[$(Self::$variant),+]
            }

            /// The name stored in documents; `None` for `Unknown`.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$variant => Some($text),)+
                    Self::Unknown => None,
                }
            }

            /// The value a stored name stands for: `Unknown` for a name this build does not know.
            pub fn parse(name: &str) -> Self {
                match name {
                    $($text => Self::$variant,)+
                    _ => Self::Unknown,
                }
            }
        }

        impl autosurgeon::Hydrate for $name {
            fn hydrate_string(s: &'_ str) -> Result<Self, autosurgeon::HydrateError> {
                Ok(Self::parse(s))
            }
        }

        impl autosurgeon::Reconcile for $name {
            type Key<'a> = autosurgeon::reconcile::NoKey;

            fn reconcile<R: autosurgeon::Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
                match self.name() {
                    Some(name) => reconciler.str(name),
                    // Whatever is stored (a newer app's value) stays.
                    None => Ok(()),
                }
            }
        }
    };
}

pub(crate) use open_enum;

#[cfg(test)]
mod tests {
    use autosurgeon::{Hydrate, Reconcile, hydrate, reconcile};

    open_enum! {
        /// A test enum.
        pub enum Colour {
            /// Red.
            Red = "red",
            Green = "green",
        }
    }

    #[derive(Debug, PartialEq, Hydrate, Reconcile)]
    struct Paint {
        colour: Colour,
        note: String,
    }

    #[test]
    fn an_unknown_name_is_read_as_unknown_and_left_stored_when_saved_back() {
        let mut doc = automerge::AutoCommit::new();
        reconcile(&mut doc, &Paint { colour: Colour::Red, note: "a".into() }).expect("writes");
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "colour", "ultraviolet").expect("puts");
        let mut paint: Paint = hydrate(&doc).expect("reads a newer app's value");
        assert_eq!(paint.colour, Colour::Unknown);
        paint.note = "b".into();
        reconcile(&mut doc, &paint).expect("saves back");
        let stored: String = autosurgeon::hydrate_prop(&doc, automerge::ROOT, "colour").expect("a string");
        assert_eq!(stored, "ultraviolet", "the newer value is kept");
        let again: Paint = hydrate(&doc).expect("reads");
        assert_eq!(again.note, "b");
    }

    #[test]
    fn names_round_trip_and_unknown_is_not_known() {
        for c in Colour::known() {
            assert_eq!(Colour::parse(c.name().expect("known")), *c);
        }
        assert!(!Colour::known().contains(&Colour::Unknown));
        assert_eq!(Colour::Unknown.name(), None);
        assert_eq!(Colour::parse("red"), Colour::Red);
    }

    #[test]
    fn unknown_with_nothing_stored_writes_nothing_and_does_not_read_back() {
        let mut doc = automerge::AutoCommit::new();
        reconcile(&mut doc, &Paint { colour: Colour::Unknown, note: "a".into() }).expect("writes");
        assert!(hydrate::<_, Paint>(&doc).is_err(), "no colour stored: the record does not hydrate");
    }
}
