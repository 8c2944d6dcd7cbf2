//! Small pieces of Go's standard library the fake needs to behave like fleetd: `path.Match`,
//! `crypto/sha1`, URL decoding.

/// Go's `path.Match`: `*` matches any run of non-`/` characters, `?` one non-`/`
/// character, `[…]` a class (ranges, `^` negation), `\` escapes. A malformed pattern matches
/// nothing (fleet ignores `path.Match`'s error: `matched, _ := path.Match(…)`).
pub fn path_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n).unwrap_or(false)
}

fn matches(p: &[char], n: &[char]) -> Option<bool> {
    let Some((&first, rest)) = p.split_first() else {
        return Some(n.is_empty());
    };
    match first {
        '*' => {
            // Any run of non-separators, shortest first.
            for skip in 0..=n.len() {
                if skip > 0 && n[skip - 1] == '/' {
                    break;
                }
                if matches(rest, &n[skip..])? {
                    return Some(true);
                }
            }
            // The rest of the pattern must still be well-formed.
            validate(rest)?;
            Some(false)
        }
        '?' => match n.split_first() {
            Some((&c, n_rest)) if c != '/' => matches(rest, n_rest),
            _ => validate(rest).map(|()| false),
        },
        '[' => {
            let (class_ok, after) = class(rest, n.first().copied())?;
            if class_ok && n.first().is_some_and(|&c| c != '/') {
                matches(after, &n[1..])
            } else {
                validate(after).map(|()| false)
            }
        }
        '\\' => {
            let (&lit, rest) = rest.split_first()?;
            match n.split_first() {
                Some((&c, n_rest)) if c == lit => matches(rest, n_rest),
                _ => validate(rest).map(|()| false),
            }
        }
        lit => match n.split_first() {
            Some((&c, n_rest)) if c == lit => matches(rest, n_rest),
            _ => validate(rest).map(|()| false),
        },
    }
}

/// Parses a character class after `[`: whether `c` is in it, and the pattern after `]`.
/// `None` when malformed.
fn class(p: &[char], c: Option<char>) -> Option<(bool, &[char])> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &ch = p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&c| c != ']') {
            i += 1;
            hi = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            if hi < lo {
                return None;
            }
        }
        if let Some(c) = c
            && lo <= c
            && c <= hi
        {
            matched = true;
        }
    }
    Some((matched != negated, &p[i..]))
}

/// Checks the rest of a pattern is well-formed.
fn validate(p: &[char]) -> Option<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1)?;
                i += 2;
            }
            '[' => {
                let (_, after) = class(&p[i + 1..], None)?;
                i = p.len() - after.len();
            }
            _ => i += 1,
        }
    }
    Some(())
}

/// SHA-1 of `data`, as lowercase hex (fleet's unit hash: `sha1.Sum(unitFile.Bytes())`).
pub fn sha1_hex(data: &[u8]) -> String {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set, as in query strings).
pub fn percent_decode(text: &str, plus: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `(key, value)` pairs of a query string, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_match_is_go_s() {
        for (pattern, name, expected) in [
            ("paz-web-v1-*.service", "paz-web-v1-0-abc.service", true),
            ("paz-web-v1-*.service", "paz-web-v2-0-abc.service", false),
            ("web@*.service", "web@1.service", true),
            ("*", "a/b", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("[", "[", false),
            ("exact.service", "exact.service", true),
            ("*x", "abc", false),
        ] {
            assert_eq!(path_match(pattern, name), expected, "{pattern} {name}");
        }
    }

    #[test]
    fn sha1_matches_known_digests() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            sha1_hex(&[b'a'; 1000]),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
    }

    #[test]
    fn decodes_urls() {
        assert_eq!(percent_decode("web%401.service", false), "web@1.service");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(
            query_pairs("a=1&nextPageToken=ZAACAA%3D%3D&b"),
            [
                ("a".into(), "1".into()),
                ("nextPageToken".into(), "ZAACAA==".into()),
                ("b".into(), String::new())
            ]
        );
    }
}
