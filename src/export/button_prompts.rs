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
//! sources (the `category` column, or the id up to its trailing `-NNN`), the first question of
//! each in file order: one question for every kind of fact the owner has taught the model.

use crate::config::{ResolvedCurriculum, SourceConfig};
use anyhow::{bail, Result};
use badge_firmware::app::MAX_QUESTION_CHARS;
use badge_firmware::prompts::{PromptsSpec, DEFAULT_INTRO, MAX_PROMPTS};

/// The first question of each category of the curriculum's Q&A training files, in order.
fn default_questions(rc: &ResolvedCurriculum) -> Result<Vec<String>> {
    let mut seen = Vec::<String>::new();
    let mut out = Vec::new();
    for src in rc.curriculum.sources.values() {
        if let SourceConfig::Qa { train, .. } = src {
            for pair in crate::data::read_qa_csv(train)? {
                let cat = pair.category_name();
                if !seen.contains(&cat) {
                    seen.push(cat);
                    out.push(pair.question.trim().to_string());
                }
            }
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
        None => default_questions(rc)?,
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
    let file = BlobFile {
        bytes: crate::util::AlignedBytes::from_slice(blob),
    };
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
        assert_eq!(p.ask[0], qa[0].question);
        let mut rc2 = rc.clone();
        rc2.curriculum.buttons.ask_me_about = Some(vec![" ".into()]);
        let e = format!("{:#}", button_prompts(&rc2).unwrap_err());
        assert!(e.contains("[buttons] ask_me_about[0] is empty"), "{e}");
        rc2.curriculum.buttons.intro = Some("x".repeat(201));
        let e = format!("{:#}", button_prompts(&rc2).unwrap_err());
        assert!(e.contains("[buttons] intro has 201 characters"), "{e}");
    }
}
