//! The prompt template: one string with `{question}` and `{answer}` that turns a Q&A pair into
//! a training sample, and a question into the prompt the badge completes. It travels inside the
//! blob so the badge formats questions exactly as training did.

/// A parsed template such as `"Q: {question}\nA: {answer}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptTemplate<'a> {
    /// Text before `{question}`.
    pub before_question: &'a str,
    /// Text between `{question}` and `{answer}`, including the separator before the answer.
    pub between: &'a str,
}

impl<'a> PromptTemplate<'a> {
    /// The template must contain `{question}` once, followed later by `{answer}` once, and
    /// nothing after `{answer}` (the answer ends with EOS).
    pub fn parse(text: &'a str) -> Result<Self, &'static str> {
        let q = text
            .find("{question}")
            .ok_or("missing the {question} placeholder")?;
        let a = text
            .find("{answer}")
            .ok_or("missing the {answer} placeholder")?;
        if text.matches("{question}").count() != 1 || text.matches("{answer}").count() != 1 {
            return Err("each placeholder must appear exactly once");
        }
        if a < q {
            return Err("{answer} must come after {question}");
        }
        if a + "{answer}".len() != text.len() {
            return Err(
                "nothing may follow {answer} (the answer ends with the end-of-sequence token)",
            );
        }
        Ok(PromptTemplate {
            before_question: &text[..q],
            between: &text[q + "{question}".len()..a],
        })
    }

    /// The separator's trailing spaces are left out of the prompt: the tokenizer attaches a
    /// space to the word after it, so the answer's first token carries it, as in training.
    pub fn prompt_suffix(&self) -> &'a str {
        self.between.trim_end_matches(' ')
    }

    /// Writes the prompt for `question` through `out` (no allocation on the badge).
    pub fn write_prompt(&self, question: &str, out: &mut impl FnMut(&str)) {
        out(self.before_question);
        out(question);
        out(self.prompt_suffix());
    }

    /// The whole training text of a pair, split as (prompt, answer part) so that the loss can
    /// be taken on the answer only.
    #[cfg(feature = "std")]
    pub fn render(&self, question: &str, answer: &str) -> (String, String) {
        let prompt = format!(
            "{}{}{}",
            self.before_question,
            question,
            self.prompt_suffix()
        );
        let sep_tail = &self.between[self.prompt_suffix().len()..];
        (prompt, format!("{sep_tail}{answer}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_default_template() {
        let t = PromptTemplate::parse("Q: {question}\nA: {answer}").unwrap();
        assert_eq!(t.before_question, "Q: ");
        assert_eq!(t.prompt_suffix(), "\nA:");
        let mut s = alloc::string::String::new();
        t.write_prompt("Who?", &mut |p| s.push_str(p));
        assert_eq!(s, "Q: Who?\nA:");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(PromptTemplate::parse("{answer} {question}").is_err());
        assert!(PromptTemplate::parse("Q: {question}").is_err());
        assert!(PromptTemplate::parse("{question}{answer} end").is_err());
        assert!(PromptTemplate::parse("{question}{question}{answer}").is_err());
    }
}
