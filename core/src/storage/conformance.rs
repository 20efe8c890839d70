//! One test suite every [`super::KvStore`] backend must pass.
//!
//! Exported behind the `testing` feature, so a backend in another crate runs it too:
//! `liaison_core::kv_conformance!(make_store());` in a test file, where each call of
//! `make_store()` returns an empty store.

/// Expands to a `conformance` test module run against the store built by `$make`, which must
/// give a new, empty store each time it is evaluated (tests run in parallel).
#[macro_export]
macro_rules! kv_conformance {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::storage::{Batch, KvStore, StorageError};

            fn store() -> impl KvStore {
                $make
            }

            #[test]
            fn get_missing_is_none() {
                assert_eq!(store().get(b"nope").unwrap(), None);
            }

            #[test]
            fn put_get_overwrite_delete() {
                let s = store();
                s.put(b"a", b"1").unwrap();
                assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
                s.put(b"a", b"2").unwrap();
                assert_eq!(s.get(b"a").unwrap(), Some(b"2".to_vec()));
                s.delete(b"a").unwrap();
                assert_eq!(s.get(b"a").unwrap(), None);
                // Deleting what is absent is not an error.
                s.delete(b"a").unwrap();
            }

            #[test]
            fn empty_values_and_binary_keys() {
                let s = store();
                s.put(&[0, 255, 0], b"").unwrap();
                assert_eq!(s.get(&[0, 255, 0]).unwrap(), Some(vec![]));
            }

            #[test]
            fn scan_prefix_is_ordered_and_bounded() {
                let s = store();
                for k in ["b/2", "a/1", "b/1", "b", "c/1", "b/10"] {
                    s.put(k.as_bytes(), k.as_bytes()).unwrap();
                }
                let got: Vec<String> = s
                    .scan_prefix(b"b/")
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| {
                        assert_eq!(k, v);
                        String::from_utf8(k).unwrap()
                    })
                    .collect();
                assert_eq!(got, ["b/1", "b/10", "b/2"]);
                let keys = s.scan_keys(b"b").unwrap();
                assert_eq!(keys.len(), 4);
                assert!(s.scan_prefix(b"z").unwrap().is_empty());
                assert_eq!(s.scan_prefix(b"").unwrap().len(), 6);
            }

            #[test]
            fn scan_prefix_with_high_bytes() {
                let s = store();
                s.put(&[1, 255], b"x").unwrap();
                s.put(&[1, 255, 255], b"y").unwrap();
                s.put(&[2], b"z").unwrap();
                assert_eq!(s.scan_prefix(&[1, 255]).unwrap().len(), 2);
            }

            #[test]
            fn batch_applies_in_order() {
                let s = store();
                s.put(b"gone", b"x").unwrap();
                let mut b = Batch::new();
                b.put(b"k".to_vec(), b"1".to_vec())
                    .put(b"k".to_vec(), b"2".to_vec())
                    .delete(b"gone".to_vec())
                    .put(b"new".to_vec(), b"n".to_vec())
                    .delete(b"new".to_vec());
                assert_eq!(b.len(), 5);
                s.apply(b).unwrap();
                assert_eq!(s.get(b"k").unwrap(), Some(b"2".to_vec()));
                assert_eq!(s.get(b"gone").unwrap(), None);
                assert_eq!(s.get(b"new").unwrap(), None);
            }

            #[test]
            fn empty_batch_and_flush_are_fine() {
                let s = store();
                s.apply(Batch::new()).unwrap();
                s.flush().unwrap();
            }

            #[test]
            fn scan_pages_walk_a_prefix_in_bounded_pages() {
                let s = store();
                let mut b = Batch::new();
                for i in 0u32..300 {
                    b.put([b"p/".as_slice(), &i.to_be_bytes()].concat(), vec![7; 100]);
                }
                b.put(b"o".to_vec(), vec![1]).put(b"q".to_vec(), vec![1]);
                s.apply(b).unwrap();
                let (mut seen, mut after, mut pages) = (Vec::new(), None::<Vec<u8>>, 0);
                loop {
                    let page = s.scan_page(b"p/", after.as_deref(), 1_000).unwrap();
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    assert!(page.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() < 1_000 + 120);
                    seen.extend(page.into_iter().map(|(k, _)| k));
                    pages += 1;
                }
                assert_eq!(seen, s.scan_keys(b"p/").unwrap(), "every key once, in order");
                assert!(pages >= 30, "pages are bounded in bytes, got {pages}");
                // A page larger than the bound still returns one entry.
                assert_eq!(s.scan_page(b"", None, 0).unwrap().len(), 1);
                assert!(s.scan_page(b"q", Some(b"q"), 10).unwrap().is_empty());
            }

            #[test]
            fn many_keys() {
                let s = store();
                let mut b = Batch::new();
                for i in 0u32..2048 {
                    b.put(i.to_be_bytes().to_vec(), vec![1; (i % 7) as usize]);
                }
                s.apply(b).unwrap();
                assert_eq!(s.scan_keys(&[]).unwrap().len(), 2048);
                assert_eq!(s.scan_prefix(&[0, 0, 7]).unwrap().len(), 256);
            }

            #[test]
            fn preconditions_hold_or_nothing_is_written() {
                let s = store();
                s.put(b"a", b"1").unwrap();
                let mut b = Batch::new();
                b.expect(b"a".to_vec(), Some(b"1".to_vec()))
                    .expect(b"b".to_vec(), None)
                    .put(b"a".to_vec(), b"2".to_vec())
                    .put(b"b".to_vec(), b"x".to_vec());
                s.apply(b).unwrap();
                assert_eq!(s.get(b"a").unwrap(), Some(b"2".to_vec()));
                assert_eq!(s.get(b"b").unwrap(), Some(b"x".to_vec()));

                // Each failing precondition: wrong value, present where absent was expected,
                // absent where a value was expected. Nothing of the batch is written.
                for (key, want) in [(b"a", Some(b"1".to_vec())), (b"b", None), (b"c", Some(Vec::new()))] {
                    let mut b = Batch::new();
                    b.put(b"z".to_vec(), b"z".to_vec()).delete(b"a".to_vec()).expect(key.to_vec(), want);
                    assert!(matches!(s.apply(b), Err(StorageError::Conflict)));
                    assert_eq!(s.get(b"z").unwrap(), None);
                    assert_eq!(s.get(b"a").unwrap(), Some(b"2".to_vec()));
                }

                // Checked against the store before the batch's own writes.
                let mut b = Batch::new();
                b.put(b"c".to_vec(), b"1".to_vec()).expect(b"c".to_vec(), None);
                s.apply(b).unwrap();
                let mut b = Batch::new();
                b.expect(b"c".to_vec(), Some(b"1".to_vec())).delete(b"c".to_vec());
                s.apply(b).unwrap();
                assert_eq!(s.get(b"c").unwrap(), None);
                // An empty value is a value, not an absence.
                s.put(b"e", b"").unwrap();
                let mut b = Batch::new();
                b.expect(b"e".to_vec(), None);
                assert!(matches!(s.apply(b), Err(StorageError::Conflict)));
            }

            #[test]
            fn preconditions_make_compare_and_set_safe_across_threads() {
                const THREADS: usize = 4;
                const INCREMENTS: u64 = 40;
                let s = store();
                s.put(b"counter", &0u64.to_be_bytes()).unwrap();
                let created = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|scope| {
                    for _ in 0..THREADS {
                        scope.spawn(|| {
                            // Exactly one thread creates the key that must be absent.
                            let mut once = Batch::new();
                            once.expect(b"once".to_vec(), None).put(b"once".to_vec(), b"1".to_vec());
                            match s.apply(once) {
                                Ok(()) => {
                                    created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                }
                                Err(StorageError::Conflict) => {}
                                Err(e) => panic!("{e}"),
                            }
                            let mut done = 0;
                            while done < INCREMENTS {
                                let old = s.get(b"counter").unwrap().unwrap();
                                let n = u64::from_be_bytes(old.as_slice().try_into().unwrap());
                                let mut b = Batch::new();
                                b.expect(b"counter".to_vec(), Some(old))
                                    .put(b"counter".to_vec(), (n + 1).to_be_bytes().to_vec());
                                match s.apply(b) {
                                    Ok(()) => done += 1,
                                    Err(StorageError::Conflict) => {}
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        });
                    }
                });
                let total = s.get(b"counter").unwrap().unwrap();
                assert_eq!(u64::from_be_bytes(total.as_slice().try_into().unwrap()), THREADS as u64 * INCREMENTS);
                assert_eq!(created.load(std::sync::atomic::Ordering::SeqCst), 1);
            }
        }
    };
}
