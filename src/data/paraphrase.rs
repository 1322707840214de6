//! Generic question paraphrases: the ways people rephrase any question when they talk to a
//! badge, independent of what the question is about. Used to multiply the few phrasings a
//! person writes (free-form facts, Q&A) into many, so the model learns the answer rather than
//! one exact string.
//!
//! Each [`PatternKind`] is one way of rephrasing (a polite frame, a contraction, lower case, no
//! question mark, a filler word). [`paraphrases`] combines them and picks `n` distinct results
//! for a seed; [`apply`] applies one kind on its own. Everything is deterministic: the same
//! question, seed and `n` give the same strings on every machine.

use super::rng::{hash_str, Rng};

/// One generic way of rephrasing a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternKind {
    /// "Could you tell me what your email is?"
    CouldYouTellMe,
    /// "Can you tell me what your email is?"
    CanYouTellMe,
    /// "Please tell me what your email is." / "What is your email, please?"
    Please,
    /// "what is" ↔ "what's", "do not" ↔ "don't", …
    Contraction,
    /// "what is your email?"
    LowerCase,
    /// "What is your email"
    NoQuestionMark,
    /// "Hey, what is your email?" / "So, …" / "Um, …"
    Filler,
}

impl PatternKind {
    /// Every kind, in a fixed order.
    pub const ALL: [PatternKind; 7] = [
        PatternKind::CouldYouTellMe,
        PatternKind::CanYouTellMe,
        PatternKind::Please,
        PatternKind::Contraction,
        PatternKind::LowerCase,
        PatternKind::NoQuestionMark,
        PatternKind::Filler,
    ];

    /// Short stable name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            PatternKind::CouldYouTellMe => "could-you-tell-me",
            PatternKind::CanYouTellMe => "can-you-tell-me",
            PatternKind::Please => "please",
            PatternKind::Contraction => "contraction",
            PatternKind::LowerCase => "lower-case",
            PatternKind::NoQuestionMark => "no-question-mark",
            PatternKind::Filler => "filler",
        }
    }
}

/// Up to `n` distinct paraphrases of `question`, none equal to it, chosen for `seed`.
///
/// Combines one frame (plain, "could you tell me", "can you tell me", "please"), an optional
/// filler, an optional contraction toggle, optional lower case and an optional missing question
/// mark. Fewer than `n` come back only when the question allows fewer distinct forms.
pub fn paraphrases(question: &str, seed: u64, n: usize) -> Vec<String> {
    let original = question.trim();
    if original.is_empty() || n == 0 {
        return Vec::new();
    }
    let mut all = all_forms(original);
    all.retain(|s| s != original);
    let mut rng = Rng::new(seed ^ hash_str(original));
    rng.shuffle(&mut all);
    all.truncate(n);
    all
}

/// `question` rephrased with one pattern kind alone; `None` when the kind does not change it
/// (no contraction to make, already lower case, no question mark to drop, …).
pub fn apply(question: &str, kind: PatternKind) -> Option<String> {
    let q = Parts::of(question.trim());
    let out = match kind {
        PatternKind::CouldYouTellMe => q.framed(Frame::Could).render(),
        PatternKind::CanYouTellMe => q.framed(Frame::Can).render(),
        PatternKind::Please => q.framed(Frame::PleaseTell).render(),
        PatternKind::Contraction => Parts {
            body: toggle_contraction(&q.body)?,
            ..q.clone()
        }
        .render(),
        PatternKind::LowerCase => q.body.to_lowercase() + q.end,
        PatternKind::NoQuestionMark => Parts {
            end: "",
            ..q.clone()
        }
        .render(),
        PatternKind::Filler => with_filler(&q.body, FILLERS[0]) + q.end,
    };
    (out != question.trim()).then_some(out)
}

/// Words that open a filler form, written as they start a sentence.
const FILLERS: [&str; 4] = ["Hey, ", "So, ", "Um, ", "Okay, so "];

/// A question split into its words and its closing punctuation.
#[derive(Clone)]
struct Parts {
    body: String,
    end: &'static str,
}

#[derive(Clone, Copy)]
enum Frame {
    Plain,
    Could,
    Can,
    PleaseTell,
    PleaseAfter,
}

impl Parts {
    fn of(question: &str) -> Parts {
        let body = question.trim_end_matches(['?', '.', '!', ' ']).to_string();
        let end = if question.ends_with('?') {
            "?"
        } else if question.ends_with('.') {
            "."
        } else {
            ""
        };
        Parts { body, end }
    }

    fn render(&self) -> String {
        format!("{}{}", self.body, self.end)
    }

    /// The question inside a frame. Wh-questions become indirect ("what your email is");
    /// imperatives ("Tell me about …") take the frame directly; anything else keeps its own
    /// word order after a comma ("Can you tell me, does your dog bark?").
    fn framed(&self, frame: Frame) -> Parts {
        let lower = lower_first(&self.body);
        let imperative = is_imperative(&lower);
        let inner = || {
            indirect(&lower)
                .map(|s| format!("tell me {s}"))
                .unwrap_or_else(|| format!("tell me, {lower}"))
        };
        let (body, end) = match frame {
            Frame::Plain => return self.clone(),
            Frame::Could | Frame::Can => {
                let lead = if matches!(frame, Frame::Could) {
                    "Could you"
                } else {
                    "Can you"
                };
                let rest = if imperative { lower.clone() } else { inner() };
                (format!("{lead} {rest}"), "?")
            }
            Frame::PleaseTell => {
                let rest = if imperative { lower.clone() } else { inner() };
                (format!("Please {rest}"), ".")
            }
            Frame::PleaseAfter => (format!("{}, please", self.body), "?"),
        };
        // A question the user wrote without a mark keeps having none.
        let end = if self.end.is_empty() { "" } else { end };
        Parts { body, end }
    }
}

/// Every distinct combination of frame, filler, contraction, case and end mark.
fn all_forms(question: &str) -> Vec<String> {
    let base = Parts::of(question);
    let frames = [
        Frame::Plain,
        Frame::Could,
        Frame::Can,
        Frame::PleaseTell,
        Frame::PleaseAfter,
    ];
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for frame in frames {
        let framed = base.framed(frame);
        let mut bodies = vec![framed.body.clone()];
        if let Some(t) = toggle_contraction(&framed.body) {
            bodies.push(t);
        }
        for body in bodies {
            let mut with_fillers = vec![body.clone()];
            with_fillers.extend(FILLERS.iter().map(|f| with_filler(&body, f)));
            for b in with_fillers {
                for lower in [false, true] {
                    let b = if lower { b.to_lowercase() } else { b.clone() };
                    let ends: &[&str] = if framed.end.is_empty() {
                        &[""]
                    } else {
                        &[framed.end, ""]
                    };
                    for end in ends {
                        let s = format!("{b}{end}");
                        if seen.insert(s.clone()) {
                            out.push(s);
                        }
                    }
                }
            }
        }
    }
    out
}

/// `filler` in front of `body`, whose first letter then drops to lower case.
fn with_filler(body: &str, filler: &str) -> String {
    format!("{filler}{}", lower_first(body))
}

/// The first letter in lower case, unless the first word is "I", an acronym or a name-like
/// word with capitals inside ("McGregor").
fn lower_first(text: &str) -> String {
    let first_word = text.split_whitespace().next().unwrap_or("");
    let keep = first_word == "I"
        || first_word.starts_with("I'")
        || first_word.chars().skip(1).any(char::is_uppercase);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if !keep => c.to_lowercase().chain(chars).collect(),
        _ => text.to_string(),
    }
}

fn is_imperative(lower: &str) -> bool {
    [
        "tell me", "describe", "name ", "list ", "say ", "give me", "show me",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
}

/// "what is your email" → "what your email is"; "where do you work" → "where you work";
/// `None` for shapes it does not know.
fn indirect(lower: &str) -> Option<String> {
    const WH: [&str; 7] = ["what", "where", "who", "when", "which", "how", "why"];
    const BE: [&str; 4] = ["is", "are", "was", "were"];
    const PRONOUNS: [&str; 6] = ["you", "he", "she", "it", "they", "we"];
    let words: Vec<&str> = lower.split_whitespace().collect();
    if words.len() < 3 || !WH.contains(&words[0]) {
        return None;
    }
    // The wh-phrase is the wh-word plus, at most, one more word ("how old", "what year").
    let aux_at = (1..words.len().min(3)).find(|&i| BE.contains(&words[i]) || words[i] == "do")?;
    let (wh, aux, rest) = (&words[..aux_at], words[aux_at], &words[aux_at + 1..]);
    if rest.is_empty() {
        return None;
    }
    let mut out: Vec<&str> = wh.to_vec();
    if aux == "do" {
        out.extend_from_slice(rest);
    } else if PRONOUNS.contains(&rest[0]) {
        // "how old are you" → "how old you are"; "where were you born" → "where you were born".
        out.push(rest[0]);
        out.push(aux);
        out.extend_from_slice(&rest[1..]);
    } else if rest.len() > 1 && rest[rest.len() - 1].ends_with("ed") {
        // "where is your office located" → "where your office is located".
        out.extend_from_slice(&rest[..rest.len() - 1]);
        out.push(aux);
        out.push(rest[rest.len() - 1]);
    } else {
        out.extend_from_slice(rest);
        out.push(aux);
    }
    Some(out.join(" "))
}

/// Long and short forms, long first.
const CONTRACTIONS: [(&str, &str); 16] = [
    ("what is", "what's"),
    ("where is", "where's"),
    ("who is", "who's"),
    ("how is", "how's"),
    ("when is", "when's"),
    ("that is", "that's"),
    ("it is", "it's"),
    ("you are", "you're"),
    ("I am", "I'm"),
    ("do not", "don't"),
    ("does not", "doesn't"),
    ("did not", "didn't"),
    ("is not", "isn't"),
    ("are not", "aren't"),
    ("cannot", "can't"),
    ("what are", "what're"),
];

/// The first contraction found, made (long → short) or undone (short → long); `None` when the
/// text has neither form.
fn toggle_contraction(text: &str) -> Option<String> {
    let mut best: Option<(usize, &str, &str)> = None;
    for (long, short) in CONTRACTIONS {
        for (from, to) in [(long, short), (short, long)] {
            if let Some(at) = find_words(text, from) {
                if best.is_none_or(|(b, _, _)| at < b) {
                    best = Some((at, from, to));
                }
            }
        }
    }
    let (at, from, to) = best?;
    let found = &text[at..at + from.len()];
    let to = if found.starts_with(|c: char| c.is_uppercase()) {
        let mut c = to.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    } else {
        to.to_string()
    };
    Some(format!("{}{}{}", &text[..at], to, &text[at + from.len()..]))
}

/// Byte offset of `phrase` in `text` as whole words, matching the first letter in either case.
fn find_words(text: &str, phrase: &str) -> Option<usize> {
    // ASCII lower case keeps every byte offset, so offsets into it are offsets into `text`.
    let lower_text = text.to_ascii_lowercase();
    let lower_phrase = phrase.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower_text[from..].find(&lower_phrase) {
        let at = from + i;
        let end = at + lower_phrase.len();
        let before_ok =
            at == 0 || !text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '\'');
        let after_ok = end == text.len()
            || !text[end..].starts_with(|c: char| c.is_alphanumeric() || c == '\'');
        let case_ok = phrase != "I am" && phrase != "I'm" || text[at..].starts_with('I');
        if before_ok && after_ok && case_ok {
            return Some(at);
        }
        from = at + 1;
        while !lower_text.is_char_boundary(from) {
            from += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polite_frames_make_indirect_questions() {
        let q = "What is your email?";
        assert_eq!(
            apply(q, PatternKind::CouldYouTellMe).unwrap(),
            "Could you tell me what your email is?"
        );
        assert_eq!(
            apply(q, PatternKind::CanYouTellMe).unwrap(),
            "Can you tell me what your email is?"
        );
        assert_eq!(
            apply(q, PatternKind::Please).unwrap(),
            "Please tell me what your email is."
        );
        assert_eq!(
            apply("How old are you?", PatternKind::CanYouTellMe).unwrap(),
            "Can you tell me how old you are?"
        );
        assert_eq!(
            apply("Where do you work?", PatternKind::CouldYouTellMe).unwrap(),
            "Could you tell me where you work?"
        );
        assert_eq!(
            apply("Where were you born?", PatternKind::CouldYouTellMe).unwrap(),
            "Could you tell me where you were born?"
        );
    }

    #[test]
    fn imperatives_and_yes_no_questions_keep_their_words() {
        assert_eq!(
            apply("Tell me about your dog.", PatternKind::CouldYouTellMe).unwrap(),
            "Could you tell me about your dog?"
        );
        assert_eq!(
            apply("Do you have a dog?", PatternKind::CanYouTellMe).unwrap(),
            "Can you tell me, do you have a dog?"
        );
    }

    #[test]
    fn contractions_go_both_ways_and_respect_word_edges() {
        assert_eq!(
            apply("What is your name?", PatternKind::Contraction).unwrap(),
            "What's your name?"
        );
        assert_eq!(
            apply("What's your name?", PatternKind::Contraction).unwrap(),
            "What is your name?"
        );
        assert_eq!(
            apply("Why do not you cook?", PatternKind::Contraction).unwrap(),
            "Why don't you cook?"
        );
        // "somewhat is" must not become "somewhat's".
        assert_eq!(apply("Somewhat is odd", PatternKind::Contraction), None);
        assert_eq!(apply("Where do you live?", PatternKind::Contraction), None);
    }

    #[test]
    fn case_mark_and_fillers() {
        let q = "What is your email?";
        assert_eq!(
            apply(q, PatternKind::LowerCase).unwrap(),
            "what is your email?"
        );
        assert_eq!(
            apply(q, PatternKind::NoQuestionMark).unwrap(),
            "What is your email"
        );
        assert_eq!(
            apply(q, PatternKind::Filler).unwrap(),
            "Hey, what is your email?"
        );
        assert_eq!(apply("what is it", PatternKind::LowerCase), None);
        assert_eq!(apply("what is it", PatternKind::NoQuestionMark), None);
        // "I" stays a capital behind a filler.
        assert_eq!(
            apply("I wonder where you live?", PatternKind::Filler).unwrap(),
            "Hey, I wonder where you live?"
        );
    }

    #[test]
    fn paraphrases_are_distinct_deterministic_and_exclude_the_original() {
        let q = "What is your favourite food?";
        let a = paraphrases(q, 7, 20);
        assert_eq!(a.len(), 20);
        assert_eq!(a, paraphrases(q, 7, 20));
        assert!(!a.iter().any(|s| s == q));
        let set: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), a.len());
        assert_ne!(a, paraphrases(q, 8, 20), "the seed must matter");
        // Every kind of pattern shows up among all forms.
        let all = paraphrases(q, 1, usize::MAX);
        assert!(all
            .iter()
            .any(|s| s.starts_with("Could you tell me what your favourite food is")));
        assert!(all.iter().any(|s| s.starts_with("Can you tell me")));
        assert!(all.iter().any(|s| s.starts_with("Please tell me")));
        assert!(all.iter().any(|s| s.contains("What's your favourite food")));
        assert!(all.iter().any(|s| s == "what is your favourite food?"));
        assert!(all.iter().any(|s| s == "What is your favourite food"));
        assert!(all.iter().any(|s| s.starts_with("So, what")));
        assert!(all.iter().any(|s| s.starts_with("Um, what")));
    }

    #[test]
    fn every_kind_changes_a_typical_question() {
        for kind in PatternKind::ALL {
            assert!(
                apply("What is your email?", kind).is_some(),
                "{} left the question as it was",
                kind.name()
            );
        }
    }

    #[test]
    fn non_ascii_names_survive() {
        let q = "Who is Åsa Øberg?";
        let all = paraphrases(q, 3, usize::MAX);
        assert!(all
            .iter()
            .all(|s| s.contains("Åsa Øberg") || s.contains("åsa øberg")));
        assert!(all.iter().any(|s| s == "Can you tell me who Åsa Øberg is?"));
        assert!(paraphrases("", 1, 5).is_empty());
    }
}
