//! What a terminal or a log is given. Names, locations and reasons can come from a member, and a
//! member's writer is not trusted: a file name holding an escape sequence or a newline could
//! rewrite the operator's screen or forge a log line. Every line for people passes through
//! [`shown`], which escapes control characters (and the bidirectional overrides that reorder
//! text) and leaves everything else, other scripts included, as it is.

use std::borrow::Cow;

/// `text` with each control or bidi-override character written as its Rust escape (`\n`,
/// `\u{1b}`, `\u{202e}`).
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A character that changes how a terminal shows what follows it.
fn hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `println!` for people: the whole line goes through [`shown`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::shown::shown(&format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        assert_eq!(shown("model.safetensors"), "model.safetensors");
        assert_eq!(shown("modèle/重み.bin"), "modèle/重み.bin");
        assert_eq!(shown("a\nFAKE: ok"), "a\\nFAKE: ok");
        assert_eq!(shown("\u{1b}[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(shown("tab\there"), "tab\\there");
        assert_eq!(shown("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(shown("del\u{7f}"), "del\\u{7f}");
    }
}
