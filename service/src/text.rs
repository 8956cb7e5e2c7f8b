//! Bounded text for error messages, status details and log lines.
//!
//! gRPC clients refuse response metadata over 16 KiB (some over 8 KiB), and a status message or
//! its details travel there. Any text a client supplied (node ids, types, parameter names and
//! values, version strings) and any list (node types, node ids, violations) is cut with these
//! helpers before it reaches a message, so no input can make an error unreadable. The full
//! detail stays where it has room: in-band errors in the response body.

use std::borrow::Cow;
use std::fmt::Display;

/// Longest piece of client-supplied text (an id, a type name, a value) quoted in a message.
pub const MAX_QUOTED_BYTES: usize = 128;
/// Longest single message of a violation, parameter error or node error.
pub const MAX_MESSAGE_BYTES: usize = 1_024;
/// Most items of a list named in one message.
pub const MAX_LISTED: usize = 16;

/// `s` cut at a character boundary, with a note saying how much was left out, to at most
/// `max_bytes` bytes in all (the note included). Borrowed when `s` already fits. A bound too
/// small to hold the note gets the bare cut.
///
/// ```
/// # use remotemedia::text::clip;
/// assert_eq!(clip("short", 10), "short");
/// assert_eq!(clip(&"ab→cd".repeat(10), 30), "ab→cdab… (61 more bytes)");
/// ```
pub fn clip(s: &str, max_bytes: usize) -> Cow<'_, str> {
    if s.len() <= max_bytes {
        return Cow::Borrowed(s);
    }
    // The note's length with the most it could report (all of `s`) bounds the note for any cut.
    let note_room = format!("… ({} more bytes)", s.len()).len();
    if max_bytes < note_room {
        return Cow::Owned(s[..s.floor_char_boundary(max_bytes)].to_owned());
    }
    let cut = before_open_note(s, s.floor_char_boundary(max_bytes - note_room));
    Cow::Owned(format!("{}… ({} more bytes)", &s[..cut], s.len() - cut))
}

/// `cut`, or where the note of an inner cut begins when `cut` falls inside that note: a quoted
/// id cut earlier (`` `xxx… (146 more bytes)` ``) and then cut again through its note would read
/// `` `xxx… (146 mo… (80 more bytes) ``.
fn before_open_note(s: &str, cut: usize) -> usize {
    let Some(start) = s[..cut].rfind('…') else { return cut };
    let note = &s[start..];
    let note_end = note.find(" more bytes)").map(|i| start + i + " more bytes)".len());
    match note_end {
        Some(end) if note.starts_with("… (") && end > cut => start,
        _ => cut,
    }
}

/// Client-supplied text for quoting in a message: cut to [`MAX_QUOTED_BYTES`].
pub fn quoted(s: &str) -> Cow<'_, str> {
    clip(s, MAX_QUOTED_BYTES)
}

/// The first `max_items` items joined with `", "`, then `"and N more"` for the rest. Each item
/// is cut to [`MAX_QUOTED_BYTES`].
///
/// ```
/// # use remotemedia::text::list;
/// assert_eq!(list(["a", "b", "c"], 2), "a, b and 1 more");
/// assert_eq!(list(["a", "b"], 2), "a, b");
/// ```
pub fn list<I>(items: I, max_items: usize) -> String
where
    I: IntoIterator,
    I::Item: Display,
{
    let mut out = String::new();
    let mut more = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= max_items {
            more += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&quoted(&item.to_string()));
    }
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_never_splits_a_character_and_stays_within_its_bound_note_included() {
        let s = "é".repeat(100);
        for max in 0..220 {
            let c = clip(&s, max);
            assert!(c.len() <= max, "{max}: {} bytes: {c}", c.len());
            let kept = c.split('…').next().unwrap();
            assert!(kept.chars().all(|ch| ch == 'é'), "{c}");
            if max >= s.len() {
                assert_eq!(c, s);
            } else if max >= 24 {
                assert!(c.ends_with(&format!("({} more bytes)", s.len() - kept.len())), "{c}");
            }
        }
    }

    #[test]
    fn a_cut_through_an_inner_note_goes_before_the_note() {
        let inner = format!("node `{}` (GainNode): parameter `gain_db` must be a number", quoted(&"n".repeat(300)));
        for max in 100..inner.len() {
            let c = clip(&inner, max);
            assert!(c.len() <= max, "{max}: {c}");
            // Every note is whole: `… (N more bytes)`.
            for (at, _) in c.match_indices('…') {
                let rest = c[at..].strip_prefix("… (").unwrap_or_else(|| panic!("{max}: a note cut through: {c}"));
                let (count, _) =
                    rest.split_once(" more bytes)").unwrap_or_else(|| panic!("{max}: a note cut through: {c}"));
                assert!(count.bytes().all(|b| b.is_ascii_digit()), "{max}: a note cut through: {c}");
            }
            let (kept, _) = c.rsplit_once('…').unwrap();
            assert!(inner.starts_with(kept), "{c}");
            assert!(c.ends_with(&format!("… ({} more bytes)", inner.len() - kept.len())), "{c}");
        }
    }

    #[test]
    fn list_cuts_long_items_and_long_lists() {
        let long = "x".repeat(1_000);
        let text = list([long.as_str(), "b"], 1);
        assert!(text.len() < MAX_QUOTED_BYTES + 64, "{text}");
        assert!(text.ends_with("and 1 more"), "{text}");
        assert_eq!(list(Vec::<String>::new(), 3), "");
    }
}
