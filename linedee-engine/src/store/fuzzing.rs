//! Not public API: the invariants of the store's key handling, for the fuzz targets and
//! the corpus replay test (feature `fuzzing`).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use super::{blobs, index, list, validate_key};

/// Body files: one `Blobs`, opened once per process. Only its path mapping is checked, which
/// never touches the disk, so the directories `open` makes are removed straight away.
fn blobs_root() -> &'static (PathBuf, blobs::Blobs) {
    static BLOBS: OnceLock<(PathBuf, blobs::Blobs)> = OnceLock::new();
    BLOBS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("linedee-fuzz-store-{}", std::process::id()));
        let b = blobs::Blobs::open(&dir, false).expect("open the fuzzing blob directory");
        std::fs::remove_dir_all(&dir).expect("remove the fuzzing blob directory");
        (dir.join("blobs"), b)
    })
}

/// Store keys and listings. The input is lines: a prefix, a delimiter, a candidate body
/// id, a page size, then keys. Checks that nothing panics; key validation accepts exactly
/// 1 to 1024 bytes; a body id maps to a file two levels inside the body directory (only
/// 32 lowercase hex digits do); ListObjectsV2 with the prefix and delimiter gives exactly
/// the keys and common prefixes a direct computation gives, each once, in order, and paging
/// through continuation tokens gives the same listing; tokens and URL encoding round-trip.
pub fn store_keys(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let prefix = lines.next().unwrap_or("");
    let delimiter = lines.next().unwrap_or("");
    let id = lines.next().unwrap_or("");
    let page = lines
        .next()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(2, |n| n % 8 + 1);
    let keys: Vec<&str> = lines.take(64).collect();

    // Body ids never become paths unless they are ids the store makes.
    let (root, blobs) = blobs_root();
    for candidate in [id, &blobs::new_id()] {
        let made_by_the_store = candidate.len() == 32
            && candidate
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let path = blobs.path(candidate);
        assert_eq!(path.is_ok(), made_by_the_store, "{candidate:?}");
        if let Ok(path) = path {
            let rest = path
                .strip_prefix(root)
                .expect("a body stays in its directory");
            let parts: Vec<_> = rest.components().collect();
            assert_eq!(parts.len(), 2, "{candidate:?} -> {path:?}");
            assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))));
            assert_eq!(path.file_name().and_then(|f| f.to_str()), Some(candidate));
        }
    }

    for s in [prefix, delimiter, id]
        .into_iter()
        .chain(keys.iter().copied())
    {
        assert_eq!(validate_key(s).is_ok(), (1..=1024).contains(&s.len()));
        assert_eq!(
            list::decode_token(&list::encode_token(s)).as_deref(),
            Some(s)
        );
        let encoded = list::url_encode(s);
        assert!(encoded.is_ascii());
        assert_eq!(percent_decode(&encoded).as_deref(), Some(s.as_bytes()));
    }
    let _ = list::decode_token(id);

    let mut conn = index::open(Path::new(":memory:"), false).expect("in-memory index");
    index::create_bucket(&conn, "b").expect("bucket");
    let mut stored: Vec<&str> = Vec::new();
    for key in keys.iter().copied().filter(|k| validate_key(k).is_ok()) {
        let obj = index::NewObject {
            bucket: "b".into(),
            key: key.into(),
            body: super::body::Body::File(blobs::new_id()),
            size: 1,
            etag: "e".into(),
            content_type: None,
            metadata: Default::default(),
        };
        index::commit_object(&mut conn, &obj, &index::Precondition::None, |_| Ok(())).expect("put");
        stored.push(key);
    }
    stored.sort_unstable();
    stored.dedup();

    // What S3 lists: keys under the prefix, rolled up at the first delimiter after it.
    let mut want_keys = Vec::new();
    let mut want_prefixes: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for key in stored.iter().filter(|k| k.starts_with(prefix)) {
        let rest = &key[prefix.len()..];
        match (!delimiter.is_empty())
            .then(|| rest.find(delimiter))
            .flatten()
        {
            Some(i) => {
                let cp = format!("{prefix}{}", &rest[..i + delimiter.len()]);
                if seen.insert(cp.clone()) {
                    want_prefixes.push(cp);
                }
            }
            None => want_keys.push(key.to_string()),
        }
    }

    let all = list::list(&conn, "b", prefix, Some(delimiter), "", 10_000).expect("list");
    let got: Vec<String> = all.contents.iter().map(|c| c.0.clone()).collect();
    assert_eq!(got, want_keys, "keys listed");
    assert_eq!(all.common_prefixes, want_prefixes, "common prefixes listed");
    assert!(all.next_token.is_none());

    let (mut paged_keys, mut paged_prefixes) = (Vec::new(), Vec::new());
    let mut cursor = String::new();
    for _ in 0..=stored.len() {
        let p = list::list(&conn, "b", prefix, Some(delimiter), &cursor, page).expect("page");
        assert!(p.contents.len() + p.common_prefixes.len() <= page);
        paged_keys.extend(p.contents.into_iter().map(|c| c.0));
        paged_prefixes.extend(p.common_prefixes);
        match p.next_token {
            Some(t) => cursor = list::decode_token(&t).expect("our own token"),
            None => break,
        }
    }
    assert_eq!(paged_keys, want_keys, "keys listed page by page ({page})");
    assert_eq!(
        paged_prefixes, want_prefixes,
        "prefixes listed page by page ({page})"
    );
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}
