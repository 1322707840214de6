//! Noise on the question side: copies of a training question with one word dropped, one word
//! replaced by a made-up word, or one word misspelt, all paired with the same answer.
//!
//! Strangers use words the owner never wrote ("reside" for "live"). A small model that saw
//! only clean questions leans on every token, so one unfamiliar word throws it to a random
//! fact. Trained on copies where one word is missing or meaningless, it learns to answer from
//! the words it does know and to shrug off the rest. Only questions get noise; answers stay
//! exact, because the badge must say them exactly. Deterministic: the same question, seed and
//! count give the same copies on every machine.

use super::rng::{distinct_draws, hash_str, Rng};

/// Letters made-up words are drawn from (lower case, so they read as ordinary words).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// Which edits a noisy copy may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edits {
    /// Drop a word, put a made-up word in its place, or misspell it: for questions about the
    /// owner, whose answer the words that are left still name.
    Any,
    /// Misspell a word only: for off-topic questions, taught the fallback line. Their content
    /// words are what makes them off-topic, so dropping or replacing one can leave a question
    /// about the owner ("Who is your hero?" without "hero"), and teach the fallback for it.
    TyposOnly,
}

/// Up to `n` distinct noisy copies of `question`, none equal to it, chosen for `seed`. A
/// question of fewer than three words gets none: too little is left to answer from.
pub fn noisy_copies(question: &str, seed: u64, n: usize, edits: Edits) -> Vec<String> {
    let original = question.trim();
    let words: Vec<&str> = original.split_whitespace().collect();
    if words.len() < 3 || n == 0 {
        return Vec::new();
    }
    let mut rng = Rng::new(seed ^ hash_str(original).rotate_left(17));
    distinct_draws(original, n, || one_edit(&words, &mut rng, edits))
}

/// `words` with one random edit, joined again.
fn one_edit(words: &[&str], rng: &mut Rng, edits: Edits) -> String {
    let i = rng.below(words.len());
    let (core, tail) = split_punctuation(words[i]);
    let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    let edit = match edits {
        Edits::Any => rng.below(3),
        Edits::TyposOnly => 2,
    };
    match edit {
        // Drop the word (its closing punctuation moves to the word before).
        0 => {
            w.remove(i);
            if !tail.is_empty() {
                if let Some(prev) = i.checked_sub(1).and_then(|p| w.get_mut(p)) {
                    prev.push_str(tail);
                }
            }
        }
        // A made-up word in its place: a word the model cannot know.
        1 => w[i] = made_up_word(rng) + tail,
        // A typo: one letter dropped, doubled or swapped with the next.
        _ => w[i] = misspell(core, rng) + tail,
    }
    let mut s = w.join(" ");
    // Keep a capital at the start, as the questions people type have.
    if let Some(first) = s.chars().next().filter(|c| c.is_lowercase()) {
        if i == 0 {
            s = first.to_uppercase().collect::<String>() + &s[first.len_utf8()..];
        }
    }
    s
}

/// A word's letters and its closing punctuation ("email?" -> ("email", "?")).
fn split_punctuation(word: &str) -> (&str, &str) {
    let cut = word
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_punctuation())
        .last()
        .map_or(word.len(), |(i, _)| i);
    word.split_at(cut)
}

fn made_up_word(rng: &mut Rng) -> String {
    let len = 3 + rng.below(5);
    (0..len)
        .map(|_| LETTERS[rng.below(LETTERS.len())] as char)
        .collect()
}

fn misspell(word: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < 3 {
        return word.to_string();
    }
    let i = rng.below(chars.len() - 1);
    let mut c = chars.clone();
    match rng.below(3) {
        0 => {
            c.remove(i);
        }
        1 => c.insert(i, chars[i]),
        _ => c.swap(i, i + 1),
    }
    c.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_differ_from_the_question_by_one_edit() {
        let q = "Where do you live these days?";
        let copies = noisy_copies(q, 7, 6, Edits::Any);
        assert_eq!(copies.len(), 6);
        for c in &copies {
            assert_ne!(c, q);
            let (a, b) = (q.split_whitespace().count(), c.split_whitespace().count());
            assert!(b == a || b + 1 == a, "{c}: one word dropped at most");
            assert!(c.ends_with('?'), "{c}: the question mark stays");
            assert!(c.starts_with(char::is_uppercase), "{c}: capital kept");
        }
        // Deterministic, and the seed matters.
        assert_eq!(copies, noisy_copies(q, 7, 6, Edits::Any));
        assert_ne!(copies, noisy_copies(q, 8, 6, Edits::Any));
    }

    #[test]
    fn short_questions_get_no_noise() {
        assert!(noisy_copies("Who are you?", 1, 3, Edits::Any).len() == 3);
        assert!(noisy_copies("Hobbies?", 1, 3, Edits::Any).is_empty());
        assert!(noisy_copies("Your name?", 1, 3, Edits::Any).is_empty());
        assert!(noisy_copies("What is your name?", 1, 0, Edits::Any).is_empty());
    }

    #[test]
    fn typo_copies_keep_every_word_but_one_letter() {
        let q = "Who is the mayor of this city?";
        let copies = noisy_copies(q, 3, 5, Edits::TyposOnly);
        assert!(copies.len() >= 3, "{copies:?}");
        for c in &copies {
            let (a, b): (Vec<_>, Vec<_>) = (
                q.split_whitespace().collect(),
                c.split_whitespace().collect(),
            );
            assert_eq!(a.len(), b.len(), "{c}: no word dropped");
            let changed: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
            assert_eq!(changed.len(), 1, "{c}: one word changed");
            let (x, y) = changed[0];
            assert!(
                x.len().abs_diff(y.len()) <= 1,
                "{c}: a typo, not a made-up word"
            );
        }
    }

    #[test]
    fn punctuation_is_split_off() {
        assert_eq!(split_punctuation("email?"), ("email", "?"));
        assert_eq!(split_punctuation("you"), ("you", ""));
        assert_eq!(split_punctuation("?!"), ("", "?!"));
    }
}
