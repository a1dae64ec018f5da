//! Rules for free text that people type and other people read (who approved, a pause reason):
//! no control characters, no invisible or direction-changing characters, a length cap; and
//! escaping for text on its way to a terminal, so stored text cannot forge output.

/// Characters that change how the text around them is shown without being visible: the
/// bidirectional controls (`U+202E` turns "gpj.exe" into what looks like "exe.jpg"), zero-width
/// characters and the byte-order mark.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// What is wrong with `value` as free text of at most `max` characters, if anything.
pub fn text_problem(value: &str, max: usize) -> Option<String> {
    let n = value.chars().count();
    if n > max {
        return Some(format!("must be at most {max} characters, got {n}"));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Some(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    if let Some(c) = value.chars().find(|&c| is_invisible(c)) {
        return Some(format!(
            "must not contain invisible or bidirectional formatting characters (found U+{:04X})",
            c as u32
        ));
    }
    None
}

/// `text` with every control character except newline and tab, and every invisible
/// character, shown as `\u{…}`: what a terminal prints is what is stored, nothing more (an
/// ANSI escape in a stored reason cannot move the cursor or recolour a line).
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() && c != '\n' && c != '\t') || is_invisible(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_rules() {
        assert_eq!(text_problem("maintenance window", 500), None);
        assert_eq!(text_problem("Zoë, café ✓", 500), None);
        assert!(text_problem("a\u{0}b", 500).unwrap().contains("U+0000"));
        assert!(text_problem("\u{1b}[2K", 500).unwrap().contains("control"));
        assert!(text_problem("admin\u{202E}gpj", 500)
            .unwrap()
            .contains("U+202E"));
        assert!(text_problem("a\u{200B}b", 500)
            .unwrap()
            .contains("invisible"));
        assert!(text_problem(&"x".repeat(501), 500)
            .unwrap()
            .contains("at most 500"));
        assert_eq!(text_problem(&"é".repeat(500), 500), None);
    }

    #[test]
    fn terminal_output_cannot_be_forged() {
        let forged = "x\u{1b}[1A\u{1b}[2K\rfleet running (not paused)\u{202E}";
        let shown = terminal_safe(forged);
        assert!(
            !shown.chars().any(|c| c.is_control() || is_invisible(c)),
            "{shown}"
        );
        assert_eq!(
            shown,
            "x\\u{001b}[1A\\u{001b}[2K\\u{000d}fleet running (not paused)\\u{202e}"
        );
        assert_eq!(terminal_safe("line 1\n\tline 2"), "line 1\n\tline 2");
    }
}
