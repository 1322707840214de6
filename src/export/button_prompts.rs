//! What the badge's button asks: the curriculum's `[buttons]` section
//! ([`ButtonsSection`](crate::config::ButtonsSection)), or its defaults.
//!
//! ```toml
//! [buttons]
//! intro = "Who are you?"                        # default "Who are you?"
//! ask_me_about = ["Where do you work?", "What do you do for fun?"]
//! ```
//!
//! Without `ask_me_about`, the list is one question per category of the curriculum's Q&A
//! sources (the `category` column, or the id up to its trailing `-NNN`), in file order: the
//! first question of each whose answer no earlier press (the introduction included) gives, so
//! every press says something new about every kind of fact the owner has taught the model.

use crate::config::{ResolvedCurriculum, SourceConfig};
use anyhow::{bail, Result};
use badge_firmware::app::MAX_QUESTION_CHARS;
use badge_firmware::prompts::{PromptsSpec, DEFAULT_INTRO, MAX_PROMPTS};

/// One question per category of the curriculum's Q&A training files, in file order: the
/// category's first question whose answer no earlier press gives (the introduction's own answer
/// included, when the intro is one of the Q&A questions), so that every press tells the
/// visitor something new. A category whose every answer is taken gets no question.
fn default_questions(rc: &ResolvedCurriculum, intro: &str) -> Result<Vec<String>> {
    let norm = crate::answer::eval::normalize;
    let mut pairs = Vec::new();
    for src in rc.curriculum.sources.values() {
        if let SourceConfig::Qa { train, .. } = src {
            pairs.extend(crate::data::read_qa_csv(train)?);
        }
    }
    let mut given: Vec<String> = pairs
        .iter()
        .filter(|p| norm(&p.question) == norm(intro))
        .map(|p| norm(&p.answer))
        .take(1)
        .collect();
    let mut categories = Vec::<String>::new();
    for p in &pairs {
        let cat = p.category_name();
        if !categories.contains(&cat) {
            categories.push(cat);
        }
    }
    let mut out = Vec::new();
    for cat in &categories {
        let fresh = pairs
            .iter()
            .filter(|p| &p.category_name() == cat)
            .find(|p| !given.contains(&norm(&p.answer)));
        if let Some(p) = fresh {
            given.push(norm(&p.answer));
            out.push(p.question.trim().to_string());
        }
    }
    out.truncate(MAX_PROMPTS - 1);
    Ok(out)
}

/// The prompts for `rc`'s blob, checked: every entry non-empty and at most
/// [`MAX_QUESTION_CHARS`] characters, at most `MAX_PROMPTS - 1` questions.
pub fn button_prompts(rc: &ResolvedCurriculum) -> Result<PromptsSpec> {
    let b = &rc.curriculum.buttons;
    let intro = b.intro.clone().unwrap_or_else(|| DEFAULT_INTRO.to_string());
    let ask = match &b.ask_me_about {
        Some(list) => list.clone(),
        None => default_questions(rc, &intro)?,
    };
    let field = |i: Option<usize>| match i {
        None => "[buttons] intro".to_string(),
        Some(i) => format!("[buttons] ask_me_about[{i}]"),
    };
    for (i, q) in
        core::iter::once((None, &intro)).chain(ask.iter().enumerate().map(|(i, q)| (Some(i), q)))
    {
        if q.trim().is_empty() {
            bail!("curriculum {}: {} is empty", rc.curriculum.name, field(i));
        }
        let chars = q.chars().count();
        if chars > MAX_QUESTION_CHARS {
            bail!(
                "curriculum {}: {} has {chars} characters; at most {MAX_QUESTION_CHARS}",
                rc.curriculum.name,
                field(i)
            );
        }
    }
    if ask.len() >= MAX_PROMPTS {
        bail!(
            "curriculum {}: [buttons] ask_me_about has {} questions; at most {}",
            rc.curriculum.name,
            ask.len(),
            MAX_PROMPTS - 1
        );
    }
    let spec = PromptsSpec {
        intro: intro.trim().to_string(),
        ask: ask.iter().map(|q| q.trim().to_string()).collect(),
    };
    spec.check()
        .map_err(|e| anyhow::anyhow!("curriculum {}: [buttons]: {e}", rc.curriculum.name))?;
    Ok(spec)
}

/// What one button press makes the exported badge say: the same engine, decoding and
/// threshold as on the chip, so the owner sees before flashing what a visitor will hear.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ButtonAnswer {
    /// `intro`, or `ask N` for the list's N-th question (from 1).
    pub press: String,
    pub question: String,
    pub answer: String,
    /// The badge said its fallback line: the press asks a question it does not answer.
    pub fallback: bool,
}

/// Asks `blob` each of the button's questions, in press order.
pub fn button_answers(blob: &[u8], prompts: &PromptsSpec) -> Result<Vec<ButtonAnswer>> {
    use crate::answer::{Answerer, BlobAnswerer, BlobFile};
    let file = BlobFile::from_bytes(blob)?;
    let mut badge = BlobAnswerer::new(&file, 1, Default::default())?;
    let presses = core::iter::once(("intro".to_string(), &prompts.intro)).chain(
        prompts
            .ask
            .iter()
            .enumerate()
            .map(|(i, q)| (format!("ask {}", i + 1), q)),
    );
    let mut out = Vec::new();
    for (press, question) in presses {
        let mut answer = String::new();
        let stats = badge.answer_streaming(question, &mut |t| answer.push_str(t))?;
        out.push(ButtonAnswer {
            press,
            question: question.clone(),
            answer: answer.trim().to_string(),
            fallback: stats.outcome == badge_firmware::generate::Outcome::Fallback,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::QaPair;

    #[test]
    fn the_tiny_curriculum_asks_one_question_per_category() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rc = crate::config::Curriculum::load(&root.join("configs/badge-tiny.toml")).unwrap();
        let p = button_prompts(&rc).unwrap();
        assert_eq!(p.intro, "Who are you?");
        let qa = crate::data::read_qa_csv(&root.join("data/profile/qa.csv")).unwrap();
        let mut cats: Vec<String> = qa.iter().map(QaPair::category_name).collect();
        cats.dedup();
        assert_eq!(p.ask.len(), cats.len());
        // "What is your name?" (the first question) has the intro's answer: the contact
        // category asks its next question with another answer instead.
        assert_eq!(qa[0].question, "What is your name?");
        let answer_of = |q: &str| qa.iter().find(|p| p.question == q).unwrap().answer.clone();
        assert_eq!(answer_of("Who are you?"), answer_of("What is your name?"));
        let first_new = qa
            .iter()
            .find(|q| q.answer != answer_of("Who are you?"))
            .unwrap();
        assert_eq!(first_new.category_name(), qa[0].category_name());
        assert_eq!(p.ask[0], first_new.question);
        let mut answers: Vec<String> = p.ask.iter().map(|q| answer_of(q)).collect();
        answers.push(answer_of("Who are you?"));
        answers.sort();
        answers.dedup();
        assert_eq!(
            answers.len(),
            p.ask.len() + 1,
            "no two presses give one answer"
        );
        let mut rc2 = rc.clone();
        rc2.curriculum.buttons.ask_me_about = Some(vec![" ".into()]);
        let e = format!("{:#}", button_prompts(&rc2).unwrap_err());
        assert!(e.contains("[buttons] ask_me_about[0] is empty"), "{e}");
        rc2.curriculum.buttons.intro = Some("x".repeat(201));
        let e = format!("{:#}", button_prompts(&rc2).unwrap_err());
        assert!(e.contains("[buttons] intro has 201 characters"), "{e}");
    }
}
