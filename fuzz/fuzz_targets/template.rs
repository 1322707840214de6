//! The prompt template parser; an accepted template formats prompts and training text.
#![no_main]

use badge_firmware::template::PromptTemplate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = PromptTemplate::parse(text) else {
        return;
    };
    let mut prompt = String::new();
    t.write_prompt("who are you?", &mut |s| prompt.push_str(s));
    let (p, a) = t.render("who are you?", "a fuzzer");
    assert!(p.starts_with(t.before_question));
    assert!(a.contains("a fuzzer"));
});
