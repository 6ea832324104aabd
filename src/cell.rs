//! Cells that hold several addresses: `a@x.com; b@x.com`, `a@x.com, b@x.com`,
//! `a@x.com|b@x.com`, one per line, `<a@x.com>, <b@x.com>`, `Jane <a@x.com>, Bob <b@x.com>`.
//!
//! Owns: cutting one raw cell into the pieces that each hold one address (each piece then goes
//! through [`address::check`] on its own). Which address a row shows is the plan's choice
//! (`Outcome::rank`); the `email_others` column that lists the rest is the writer's.
//!
//! Must not: change what happens to a cell with one address. A cell with fewer than two `@`,
//! or in which fewer than two pieces hold an `@`, is not cut at all: it is checked whole,
//! exactly as before (one pass over its bytes to count the `@`, nothing allocated). Nor is the
//! cell of a row whose quote is never closed (see [`of_row`]).
//!
//! How a cell is cut: at `,` `;` `|` and whitespace (line breaks included), except inside
//! `"..."` (a quoted display name or local part, `\` escapes), `<...>`, `(...)` and `[...]`.
//! A piece with an `@` (outside double quotes) is an address. Pieces without one are not
//! addresses: those before a `<...>` address are its display name and go with it (so
//! `"Doe, Jane" <jane@x.com>` and even `Doe, Jane <jane@x.com>` stay one address); others
//! (`and`, `/`, `n/a`, a name before a bare address) are dropped.
//!
//! At most [`MAX_ASKED`] pieces of a cell are planned (checked, deduplicated, asked); the rest
//! are only listed in `email_others` as `skipped` (or `invalid` when the free syntax check
//! already rejects them), so a cell holding thousands of addresses costs neither memory nor
//! money beyond that.

use crate::address::{self, Checked};
use crate::input::Row;

/// How many pieces of one cell are planned and asked; the others are listed as `skipped`.
pub const MAX_ASKED: usize = 20;

/// The addresses of a cell holding several, as they are planned (and estimated): the first
/// [`MAX_ASKED`] pieces, checked, each once (a repeat in the same cell, or a piece with nothing
/// in it, adds nothing).
pub fn checked(pieces: Pieces<'_>, rules: address::Rules) -> Vec<Checked> {
    let mut out: Vec<Checked> = Vec::new();
    for piece in pieces.take(MAX_ASKED) {
        let checked = address::check_with(piece, rules);
        let same = |other: &Checked| match (&checked, other) {
            (Checked::Valid(a), Checked::Valid(b)) => a.key == b.key,
            (Checked::Invalid { normalized: a, .. }, Checked::Invalid { normalized: b, .. }) => {
                a == b
            }
            _ => false,
        };
        if checked != Checked::Empty && !out.iter().any(same) {
            out.push(checked);
        }
    }
    out
}

/// The pieces of a row's email cell when it holds several addresses; `None` when it holds at
/// most one, or when the row's quotes do not balance: a quote that is never closed makes the
/// rest of the file one field, whose lines are rows, not addresses (the reader warns that they
/// are not validated), so that cell is checked whole, as it always was.
pub fn of_row(row: &Row) -> Option<Pieces<'_>> {
    let pieces = several(row.email.as_deref()?)?;
    let quotes = row.raw.iter().filter(|&&b| b == b'"').count();
    (quotes % 2 == 0).then_some(pieces)
}

/// The pieces of `cell` when it holds several addresses (in cell order, each a slice of it);
/// `None` when it holds at most one: the cell is then checked whole, as it always was.
pub fn several(cell: &[u8]) -> Option<Pieces<'_>> {
    // This runs for every row: two vectorised searches, no more.
    let first = memchr::memchr(b'@', cell)?;
    memchr::memchr(b'@', &cell[first + 1..])?;
    // The separators are ASCII or Unicode whitespace: a cell that is not UTF-8 is not cut
    // (it is rejected whole, as before).
    let text = std::str::from_utf8(cell).ok()?;
    let pieces = Pieces {
        text,
        tokens: Tokens { text, at: 0 },
    };
    (pieces.clone().take(2).count() == 2).then_some(pieces)
}

/// The address pieces of a cell, in order; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    text: &'a str,
    tokens: Tokens<'a>,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let mut name = None;
        for token in self.tokens.by_ref() {
            if !token.at {
                name.get_or_insert(token.start);
                continue;
            }
            let start = if token.angle {
                name.unwrap_or(token.start)
            } else {
                token.start
            };
            return Some(&self.text.as_bytes()[start..token.end]);
        }
        None
    }
}

/// Whitespace-or-punctuation runs cut a cell into tokens (outside quotes and brackets).
fn is_separator(c: char) -> bool {
    matches!(c, ',' | ';' | '|') || c.is_whitespace()
}

/// One token: a byte range of the cell.
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    /// Holds an `@` outside double quotes.
    at: bool,
    /// Holds a `<` outside quotes and brackets: a `Name <addr>` address.
    angle: bool,
}

#[derive(Debug, Clone)]
struct Tokens<'a> {
    text: &'a str,
    /// Where the next token is looked for.
    at: usize,
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let mut token: Option<Token> = None;
        let (mut depth, mut quoted, mut escaped) = (0u32, false, false);
        let mut end = self.text.len();
        for (i, c) in self.text[self.at..].char_indices() {
            let i = self.at + i;
            let t = match &mut token {
                Some(t) => t,
                None if is_separator(c) => continue,
                None => token.insert(Token {
                    start: i,
                    end: i,
                    at: false,
                    angle: false,
                }),
            };
            if quoted {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    quoted = false;
                }
                continue;
            }
            match c {
                '"' => quoted = true,
                '<' | '(' | '[' => {
                    t.angle |= c == '<' && depth == 0;
                    depth += 1;
                }
                '>' | ')' | ']' => depth = depth.saturating_sub(1),
                '@' => t.at = true,
                c if depth == 0 && is_separator(c) => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        self.at = end;
        let mut token = token?;
        token.end = end;
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(cell: &str) -> Option<Vec<&str>> {
        several(cell.as_bytes()).map(|p| {
            p.map(|b| std::str::from_utf8(b).unwrap())
                .collect::<Vec<_>>()
        })
    }

    #[test]
    fn cells_with_several_addresses_are_cut_between_them() {
        let cases: &[(&str, &[&str])] = &[
            ("a@x.com; b@x.com", &["a@x.com", "b@x.com"]),
            (
                "a@x.com;b@x.com;c@x.com",
                &["a@x.com", "b@x.com", "c@x.com"],
            ),
            ("a@x.com, b@x.com", &["a@x.com", "b@x.com"]),
            ("a@x.com|b@x.com", &["a@x.com", "b@x.com"]),
            ("a@x.com b@x.com", &["a@x.com", "b@x.com"]),
            ("a@x.com\nb@x.com\r\n", &["a@x.com", "b@x.com"]),
            ("a@x.com\u{a0}\u{a0}b@x.com", &["a@x.com", "b@x.com"]),
            (" ;a@x.com;; ,b@x.com; ", &["a@x.com", "b@x.com"]),
            ("<a@x.com>, <b@x.com>", &["<a@x.com>", "<b@x.com>"]),
            ("<a@x.com>,<b@x.com>", &["<a@x.com>", "<b@x.com>"]),
            (
                "Jane <a@x.com>, Bob <b@x.com>",
                &["Jane <a@x.com>", "Bob <b@x.com>"],
            ),
            (
                "Jane Doe <a@x.com>; Bob Roe <b@x.com>",
                &["Jane Doe <a@x.com>", "Bob Roe <b@x.com>"],
            ),
            (
                "\"Doe, Jane\" <jane@x.com>, \"Roe; Bob\" <bob@x.com>",
                &["\"Doe, Jane\" <jane@x.com>", "\"Roe; Bob\" <bob@x.com>"],
            ),
            (
                // Outlook's unquoted "Last, First": the name is not an address.
                "Doe, Jane <jane@x.com>; Roe, Bob <bob@x.com>",
                &["Doe, Jane <jane@x.com>", "Roe, Bob <bob@x.com>"],
            ),
            (
                // A display name that is itself an address stays with its address.
                "\"jane@x.com\" <jane@x.com>, \"bob@x.com\" <bob@x.com>",
                &["\"jane@x.com\" <jane@x.com>", "\"bob@x.com\" <bob@x.com>"],
            ),
            (
                "\"john, doe\"@x.com, b@x.com",
                &["\"john, doe\"@x.com", "b@x.com"],
            ),
            ("a@x.com and b@x.com", &["a@x.com", "b@x.com"]),
            ("a@x.com / b@x.com", &["a@x.com", "b@x.com"]),
            ("a@x.com (work, main), b@x.com", &["a@x.com", "b@x.com"]),
            ("mailto:a@x.com,b@x.com", &["mailto:a@x.com", "b@x.com"]),
            ("a@x.com, n/a, b@x.com", &["a@x.com", "b@x.com"]),
            ("a@b@x.com, c@x.com", &["a@b@x.com", "c@x.com"]),
        ];
        for (cell, want) in cases {
            assert_eq!(cut(cell).as_deref(), Some(*want), "{cell:?}");
        }
    }

    #[test]
    fn cells_with_one_address_are_left_whole() {
        for cell in [
            "",
            "jane@x.com",
            "Jane <jane@x.com>",
            "\"Doe, Jane\" <jane@x.com>",
            "Doe, Jane <jane@x.com>",
            "\"jane@x.com\" <jane@x.com>",
            "jane@@x.com",
            "John Doe jane@x.com",
            "jane@x.com, n/a",
            "\"john@doe\"@x.com",
            "mailto:a@x.com?cc=b@x.com",
            "<a@x.com, b@x.com",
            "\"a@x.com, b@x.com",
            "a@x.com/b@x.com",
        ] {
            assert_eq!(cut(cell), None, "{cell:?}");
        }
        assert!(several(b"a@x.com;\xff@x.com").is_none(), "not UTF-8");
    }

    #[test]
    fn a_row_whose_quote_never_closes_is_not_cut() {
        let row = |raw: &str, cell: &str| Row {
            line: 1,
            start: 0,
            raw: raw.as_bytes().to_vec(),
            keep: raw.len(),
            fields: 2,
            email: Some(cell.as_bytes().to_vec()),
        };
        // The rest of the file swallowed by an open quote: rows, not addresses.
        let runaway = "Bob,\"bob@x.com\nZoe,zoe@x.com\n";
        assert!(of_row(&row(runaway, "bob@x.com\nZoe,zoe@x.com\n")).is_none());
        let closed = "Bob,\"bob@x.com\nzoe@x.com\"\n";
        assert_eq!(
            of_row(&row(closed, "bob@x.com\nzoe@x.com"))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn every_piece_is_a_slice_of_the_cell_in_order_and_holds_an_at() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let parts = [
            "a@x.com", "@", " ", ",", ";", "|", "\"", "\\", "<", ">", "(", ")", "[", "]", "\n",
            "Jane", "é", "\u{a0}", "\u{3000}",
        ];
        for _ in 0..20_000 {
            let cell: String = (0..rng.random_range(0..24))
                .map(|_| parts[rng.random_range(0..parts.len())])
                .collect();
            let Some(pieces) = several(cell.as_bytes()) else {
                continue;
            };
            let mut at = 0;
            let base = cell.as_ptr() as usize;
            for piece in pieces {
                let start = piece.as_ptr() as usize - base;
                assert!(start >= at && start + piece.len() <= cell.len(), "{cell:?}");
                assert!(std::str::from_utf8(piece).is_ok(), "{cell:?}");
                assert!(piece.contains(&b'@'), "{cell:?}: {piece:?}");
                at = start + piece.len();
            }
        }
    }
}
