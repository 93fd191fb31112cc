//! Chinese-Vicuna's prompt templates, verbatim: the instruct wording of its `prompt.py`, the Alpaca
//! wording of its `finetune.py`/`generate.py`, the chat template, and its chat-history fitting.

use crate::tokenizer::Tokenizer;
use crate::Result;

/// Instruct template without input (note the newline after "### Instruction:").
pub const INSTRUCT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:";
/// Instruct template with input (Chinese-Vicuna writes no newline after the colons here).
pub const INSTRUCT_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:{instruction}\n\n### Input:{input}\n\n### Response:";
/// Alpaca wording as Chinese-Vicuna's `finetune.py` and `generate.py` write it (newlines after
/// the colons, the response starting on its own line).
pub const ALPACA: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";
pub const ALPACA_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
pub const CHAT_PRE: &str = "The following is a conversation between an AI assistant called Assistant and a human user called User. The assistant is intelligent, knowledgeable and polite to answer questions of user.\n\n";
pub const CHAT_HISTORY: &str = "User:{input}\n\nAssistant:{output}\n\n";
pub const CHAT_POST: &str = "User:{input}\n\nAssistant:";
/// Sequences Chinese-Vicuna's chat bans from generation.
pub const CHAT_BANNED: [&str; 2] = ["\n\nUser:", "\n\nAssistant:"];
/// Role markers a base model invents at the start of a line (English and Chinese, ASCII or
/// full-width colon): banned as token sequences beside `CHAT_BANNED`, and stop strings for any
/// other spelling of them, so a reply never runs on into a turn of its own making.
pub const CHAT_ROLE_MARKERS: [&str; 8] =
    ["\nUser:", "\nUser：", "\nAssistant:", "\nAssistant：", "\n用户:", "\n用户：", "\n助手:", "\n助手："];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// `prompt.py`'s instruct wording.
    Instruct,
    /// `finetune.py`'s Alpaca wording.
    Alpaca,
    Chat,
    None,
}

impl std::str::FromStr for Template {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "instruct" => Ok(Template::Instruct),
            "alpaca" => Ok(Template::Alpaca),
            "chat" => Ok(Template::Chat),
            "none" => Ok(Template::None),
            o => Err(format!("unknown template `{o}` (instruct, alpaca, chat, none)")),
        }
    }
}

pub fn instruct(instruction: &str, input: Option<&str>) -> String {
    match input {
        Some(i) if !i.is_empty() => INSTRUCT_INPUT.replace("{instruction}", instruction).replace("{input}", i),
        _ => INSTRUCT.replace("{instruction}", instruction),
    }
}

/// The Alpaca wording (`finetune.py`): the prompt ends with "### Response:\n".
pub fn alpaca(instruction: &str, input: Option<&str>) -> String {
    match input {
        Some(i) if !i.is_empty() => ALPACA_INPUT.replace("{instruction}", instruction).replace("{input}", i),
        _ => ALPACA.replace("{instruction}", instruction),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub input: String,
    pub output: String,
}

fn history_turn(t: &Turn) -> String {
    CHAT_HISTORY.replace("{input}", &t.input).replace("{output}", &t.output)
}

/// The chat prompt: preamble, the (fitted) history turns, then the new user input.
pub fn chat(history: &[Turn], input: &str) -> String {
    let mut s = CHAT_PRE.to_string();
    for t in history {
        s.push_str(&history_turn(t));
    }
    s.push_str(&CHAT_POST.replace("{input}", input));
    s
}

/// Fit chat history into `max_tokens` (Chinese-Vicuna's `preprocess_gen`): first halve the longer
/// side (in characters) of each turn, oldest first, until the history fits; if it still does not
/// fit, drop the oldest turns. The preamble and the new input are always kept. `count` returns the
/// number of tokens of a text (without BOS).
///
/// One deliberate difference: Chinese-Vicuna's drop loop can never run (its index has already
/// passed the end); we drop oldest turns as its comment intends.
pub fn fit_history(history: &[Turn], input: &str, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Vec<Turn> {
    let avail = max_tokens as isize - count(CHAT_PRE) as isize - count(&CHAT_POST.replace("{input}", input)) as isize;
    let mut h: Vec<Turn> = history.to_vec();
    let mut lens: Vec<isize> = h.iter().map(|t| count(&history_turn(t)) as isize).collect();
    let mut i = 0;
    while lens.iter().sum::<isize>() > avail && i < h.len() {
        let t = &mut h[i];
        let (li, lo) = (t.input.chars().count(), t.output.chars().count());
        if lo > li {
            t.output = t.output.chars().take(lo / 2).collect();
        } else {
            t.input = t.input.chars().take(li / 2).collect();
        }
        lens[i] = count(&history_turn(t)) as isize;
        i += 1;
    }
    while !h.is_empty() && lens.iter().sum::<isize>() > avail {
        h.remove(0);
        lens.remove(0);
    }
    h
}

/// Chinese-Vicuna's banned chat sequences as token ids. The SentencePiece space-prefix token a
/// plain encode puts in front is dropped, so the ban matches "\n\nUser:" wherever it is generated.
pub fn chat_bad_words(tk: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    CHAT_BANNED
        .iter()
        .chain(&CHAT_ROLE_MARKERS)
        .map(|s| {
            let mut ids = tk.encode(s, false)?;
            if ids.len() > 1 && tk.token_bytes(ids[0]) == b" " {
                ids.remove(0);
            }
            Ok(ids)
        })
        .collect()
}

/// One chat turn's prompt as token ids (BOS first): the history fitted into what is left of
/// `max_context` after `max_new_tokens`, then the chat template. Every front end (terminal chat,
/// `vicugna generate --template chat --history`, the browser) builds its prompt here.
pub fn chat_prompt_ids(
    tk: &Tokenizer,
    history: &[Turn],
    input: &str,
    max_context: usize,
    max_new_tokens: usize,
) -> Result<Vec<u32>> {
    let budget = max_context.saturating_sub(max_new_tokens);
    let count = |t: &str| tk.encode(t, false).map(|v| v.len()).unwrap_or(0);
    let fitted = fit_history(history, input, budget, &count);
    tk.encode(&chat(&fitted, input), true)
}

/// A prompt as token ids in `template`'s wording: the chat template with `history` fitted into
/// `max_context` (see [`chat_prompt_ids`]); the instruct and Alpaca wordings of `text` with its
/// optional `input` (no history); or the text as given.
pub fn prompt_ids(
    tk: &Tokenizer,
    template: Template,
    history: &[Turn],
    text: &str,
    input: Option<&str>,
    max_context: usize,
    max_new_tokens: usize,
) -> Result<Vec<u32>> {
    match template {
        Template::Chat => chat_prompt_ids(tk, history, text, max_context, max_new_tokens),
        Template::Instruct => tk.encode(&instruct(text, input), true),
        Template::Alpaca => tk.encode(&alpaca(text, input), true),
        Template::None => tk.encode(text, true),
    }
}

/// The tokens every first-turn prompt of `template` begins with, whatever the user writes (BOS
/// and the preamble up to where the input goes): what a chat front end can prefill while the
/// user types (`generate::PromptCache::warm`). Found by tokenising the template around two
/// different inputs, so a tokenizer that merges across the boundary is accounted for.
pub fn fixed_prefix(tk: &Tokenizer, template: Template, max_context: usize, max_new_tokens: usize) -> Result<Vec<u32>> {
    let a = prompt_ids(tk, template, &[], "甲", None, max_context, max_new_tokens)?;
    let b = prompt_ids(tk, template, &[], "Z", None, max_context, max_new_tokens)?;
    let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    Ok(a[..n].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_chinese_vicunas() {
        assert_eq!(
            instruct("把这句话翻译成英语", None),
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n把这句话翻译成英语\n\n### Response:"
        );
        assert!(instruct("翻译", Some("你好")).ends_with("### Instruction:翻译\n\n### Input:你好\n\n### Response:"));
        // finetune.py's generate_prompt up to the output
        assert_eq!(
            alpaca("把这句话翻译成英语", None),
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n把这句话翻译成英语\n\n### Response:\n"
        );
        assert_eq!(
            alpaca("翻译", Some("你好")),
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n翻译\n\n### Input:\n你好\n\n### Response:\n"
        );
        assert_eq!(alpaca("翻译", Some("")), alpaca("翻译", None));
        let h = vec![Turn { input: "你好".into(), output: "你好！有什么可以帮你？".into() }];
        assert_eq!(
            chat(&h, "北京在哪里？"),
            format!("{CHAT_PRE}User:你好\n\nAssistant:你好！有什么可以帮你？\n\nUser:北京在哪里？\n\nAssistant:")
        );
    }

    #[test]
    fn history_fitting_halves_then_drops_oldest() {
        let count = |s: &str| s.chars().count();
        let h: Vec<Turn> =
            (0..3).map(|i| Turn { input: format!("q{i}").repeat(10), output: "a".repeat(100) }).collect();
        let budget = count(CHAT_PRE) + count(&CHAT_POST.replace("{input}", "x")) + 3 * (100 + 20 + 21);
        assert_eq!(fit_history(&h, "x", budget, &count), h, "fits: unchanged");
        let f = fit_history(&h, "x", budget - 10, &count);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].output.len(), 50, "oldest turn's longer side halved first");
        assert_eq!(f[1].output.len(), 100);
        let tight = count(CHAT_PRE) + count(&CHAT_POST.replace("{input}", "x")) + 100;
        let f = fit_history(&h, "x", tight, &count);
        assert!(
            f.len() < 3 && f.iter().map(|t| count(&history_turn(t))).sum::<usize>() <= 100,
            "oldest dropped: {f:?}"
        );
    }
}
