//! Training data: Alpaca records (JSON array or JSONL with `instruction`, `input`, `output`),
//! Chinese-Vicuna chat records (`{"input": [turns…], "output": [replies…]}`, loss on the final
//! reply), ShareGPT (`conversations` of `from`/`value`) and plain `text` records; templated,
//! tokenized as BOS + prompt + response + EOS, truncated and masked so the loss falls on the
//! response only.

use anyhow::{bail, Context, Result};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use vicugna_core::prompt::{self, Turn};
use vicugna_core::tokenizer::Tokenizer;

/// Chinese-Vicuna's medical continue-training instruction (the `fixed` template's default).
pub const MEDICAL_INSTRUCTION: &str = "扮演一个专业的医生并回答病人的问题。";

#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Instruct {
        instruction: String,
        input: String,
        output: String,
    },
    /// Earlier turns, the final user input, and the reply the loss is on.
    Chat {
        history: Vec<Turn>,
        input: String,
        output: String,
    },
    Text(String),
}

/// Where a record came from, for error messages.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainTemplate {
    /// `prompt.py`'s instruct wording.
    Instruct,
    /// `finetune.py`'s Alpaca wording.
    Alpaca,
    Chat,
    Fixed,
    None,
}

impl TrainTemplate {
    /// Every template with its name (as in adapter_config.json's `vicugna.template`).
    pub const ALL: [(TrainTemplate, &'static str); 5] = [
        (TrainTemplate::Instruct, "instruct"),
        (TrainTemplate::Alpaca, "alpaca"),
        (TrainTemplate::Chat, "chat"),
        (TrainTemplate::Fixed, "fixed"),
        (TrainTemplate::None, "none"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(t, _)| *t == self).map(|(_, n)| *n).unwrap_or("none")
    }
}

impl std::fmt::Display for TrainTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TrainTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(t, _)| *t).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
            format!("unknown template `{s}` ({})", names.join(", "))
        })
    }
}

fn field<'a>(o: &'a serde_json::Map<String, Json>, k: &str) -> Result<Option<&'a str>> {
    match o.get(k) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => bail!("field `{k}` must be a string"),
    }
}

fn strings(v: &Json, k: &str) -> Result<Vec<String>> {
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| x.as_str().map(String::from).with_context(|| format!("`{k}[{i}]` must be a string")))
            .collect(),
        _ => bail!("field `{k}` must be a string or an array of strings"),
    }
}

/// One JSON object as a record.
pub fn parse_record(v: &Json) -> Result<Record> {
    let o = v.as_object().context("expected a JSON object")?;
    if let Some(c) = o.get("conversations") {
        // ShareGPT: alternating human / gpt turns; the loss is on the final gpt reply
        let turns = c.as_array().context("`conversations` must be an array")?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut pending: Option<String> = None;
        for (i, t) in turns.iter().enumerate() {
            let from = t.get("from").and_then(|f| f.as_str()).with_context(|| format!("conversations[{i}].from"))?;
            let value = t
                .get("value")
                .and_then(|f| f.as_str())
                .with_context(|| format!("conversations[{i}].value must be a string"))?;
            match (from, pending.take()) {
                ("system", None) if i == 0 => {}
                ("human" | "user", None) => pending = Some(value.to_string()),
                ("gpt" | "assistant", Some(q)) => pairs.push((q, value.to_string())),
                (f, _) => bail!("conversations[{i}]: unexpected `from: {f}` (human and gpt turns must alternate)"),
            }
        }
        let (input, output) = pairs.pop().context("`conversations` has no human/gpt pair")?;
        let history = pairs.into_iter().map(|(input, output)| Turn { input, output }).collect();
        return Ok(Record::Chat { history, input, output });
    }
    if let (Some(Json::Array(_)), Some(out)) = (o.get("input"), o.get("output")) {
        // Chinese-Vicuna chat: input = user turns, output = replies, same length
        let ins = strings(&o["input"], "input")?;
        let outs = strings(out, "output")?;
        if ins.is_empty() || ins.len() != outs.len() {
            bail!("chat record: `input` has {} turns but `output` has {} replies", ins.len(), outs.len());
        }
        let mut h: Vec<Turn> = ins.into_iter().zip(outs).map(|(input, output)| Turn { input, output }).collect();
        let last = h.pop().expect("non-empty");
        return Ok(Record::Chat { history: h, input: last.input, output: last.output });
    }
    if let Some(t) = field(o, "text")? {
        if !o.contains_key("output") {
            return Ok(Record::Text(t.to_string()));
        }
    }
    let instruction = field(o, "instruction")?.context("missing `instruction` (or `conversations`, `text`)")?;
    let output = field(o, "output")?.context("missing `output`")?;
    Ok(Record::Instruct {
        instruction: instruction.to_string(),
        input: field(o, "input")?.unwrap_or("").to_string(),
        output: output.to_string(),
    })
}

/// Records of one file (a JSON array or JSON lines). A bad record is an error naming the file
/// and line unless `skip_bad`, which counts it instead.
pub fn read_file(path: &Path, skip_bad: bool, skipped: &mut Vec<String>) -> Result<Vec<(Record, Origin)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line_of = |off: usize| text[..off].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut items: Vec<(Result<Json>, usize)> = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let raw: Vec<&RawValue> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}:{}: invalid JSON array: {e}", path.display(), e.line()))?;
        for r in raw {
            let off = r.get().as_ptr() as usize - text.as_ptr() as usize;
            items.push((serde_json::from_str(r.get()).map_err(Into::into), line_of(off)));
        }
    } else {
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            items.push((serde_json::from_str(l).map_err(|e| anyhow::anyhow!("invalid JSON: {e}")), i + 1));
        }
    }
    let mut out = Vec::new();
    for (v, line) in items {
        let origin = Origin { file: path.to_path_buf(), line };
        match v.and_then(|v| parse_record(&v)) {
            Ok(r) => out.push((r, origin)),
            Err(e) if skip_bad => skipped.push(format!("{origin}: {e:#}")),
            Err(e) => bail!("{origin}: bad record: {e:#} (--skip-bad-records skips such records)"),
        }
    }
    Ok(out)
}

/// How records become token sequences.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Templating {
    pub template: TrainTemplate,
    /// The `fixed` template's instruction.
    pub instruction: String,
    pub cutoff_len: usize,
    pub train_on_inputs: bool,
}

/// A tokenized training example: `tokens` are fed, `targets[t]` is the token expected after
/// position t (-1: no loss there).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub targets: Vec<i32>,
}

impl Example {
    pub fn n_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }
}

/// (prompt, response) of a record under a template.
pub fn render(r: &Record, t: &Templating) -> Result<(String, String)> {
    Ok(match (t.template, r) {
        (TrainTemplate::Instruct, Record::Instruct { instruction, input, output }) => {
            (prompt::instruct(instruction, Some(input)), output.clone())
        }
        (TrainTemplate::Alpaca, Record::Instruct { instruction, input, output }) => {
            (prompt::alpaca(instruction, Some(input)), output.clone())
        }
        (TrainTemplate::Chat, Record::Chat { history, input, output }) => {
            (prompt::chat(history, input), output.clone())
        }
        (TrainTemplate::Chat, Record::Instruct { instruction, input, output }) => {
            let q = if input.is_empty() { instruction.clone() } else { format!("{instruction}\n{input}") };
            (prompt::chat(&[], &q), output.clone())
        }
        (TrainTemplate::Fixed, Record::Instruct { instruction, input, output }) => {
            let q = if input.is_empty() { instruction } else { input };
            (prompt::instruct(&t.instruction, Some(q)), output.clone())
        }
        (TrainTemplate::Fixed, Record::Chat { input, output, .. }) => {
            (prompt::instruct(&t.instruction, Some(input)), output.clone())
        }
        (TrainTemplate::None, Record::Instruct { instruction, input, output }) => {
            let p = if input.is_empty() { instruction.clone() } else { format!("{instruction}\n{input}") };
            (p, output.clone())
        }
        (TrainTemplate::None, Record::Text(s)) => (String::new(), s.clone()),
        (TrainTemplate::Instruct | TrainTemplate::Alpaca, Record::Chat { .. }) => {
            bail!("a conversation record needs --template chat (or fixed)")
        }
        (_, Record::Text(_)) => bail!("a `text` record needs --template none"),
        (TrainTemplate::None, Record::Chat { .. }) => bail!("a conversation record needs --template chat"),
    })
}

/// The BOS and EOS ids every training and evaluation example is framed with: the model's own,
/// or the tokenizer's `<s>` for BOS.
pub fn bos_eos(cfg: &vicugna_core::Config, tk: &Tokenizer) -> Result<(u32, u32)> {
    let bos = cfg.bos_token_id.or_else(|| tk.token_id("<s>")).context("the model has no BOS token id")?;
    let eos = *cfg.eos_token_ids.first().context("the model has no EOS token id")?;
    Ok((bos, eos))
}

/// BOS + prompt + response + EOS, truncated to `cutoff_len` tokens, labels masked on the prompt
/// (Chinese-Vicuna counts the prompt's tokens separately and masks that many).
pub fn tokenize(r: &Record, t: &Templating, tk: &Tokenizer, bos: u32, eos: u32) -> Result<Example> {
    let (p, resp) = render(r, t)?;
    let mut ids = vec![bos];
    ids.extend(tk.encode(&format!("{p}{resp}"), false)?);
    ids.push(eos);
    let n_prompt = if t.train_on_inputs || p.is_empty() { 1 } else { 1 + tk.encode(&p, false)?.len() };
    ids.truncate(t.cutoff_len.max(2));
    let n = ids.len();
    let targets = (0..n - 1).map(|i| if i + 1 >= n_prompt { ids[i + 1] as i32 } else { -1 }).collect();
    ids.pop(); // the last token predicts nothing
    Ok(Example { tokens: ids, targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(j: &str) -> Record {
        parse_record(&serde_json::from_str(j).unwrap()).unwrap()
    }

    fn t(template: TrainTemplate) -> Templating {
        Templating { template, instruction: MEDICAL_INSTRUCTION.into(), cutoff_len: 256, train_on_inputs: false }
    }

    #[test]
    fn chinese_vicuna_chat_records_put_the_loss_on_the_final_reply() {
        let r = rec(r#"{"input":["你好","北京在哪里？"],"output":["你好！","在中国北方。"]}"#);
        let (p, resp) = render(&r, &t(TrainTemplate::Chat)).unwrap();
        assert_eq!(p, prompt::chat(&[Turn { input: "你好".into(), output: "你好！".into() }], "北京在哪里？"));
        assert_eq!(resp, "在中国北方。");
        let e = parse_record(&serde_json::from_str(r#"{"input":["a","b"],"output":["x"]}"#).unwrap()).unwrap_err();
        assert!(e.to_string().contains("2 turns but `output` has 1"), "{e}");
    }

    #[test]
    fn sharegpt_conversations_alternate() {
        let r = rec(
            r#"{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"q1"},{"from":"gpt","value":"a1"},{"from":"human","value":"q2"},{"from":"gpt","value":"a2"}]}"#,
        );
        assert_eq!(
            r,
            Record::Chat {
                history: vec![Turn { input: "q1".into(), output: "a1".into() }],
                input: "q2".into(),
                output: "a2".into()
            }
        );
        let bad = r#"{"conversations":[{"from":"human","value":"q"},{"from":"human","value":"q"}]}"#;
        assert!(parse_record(&serde_json::from_str(bad).unwrap()).unwrap_err().to_string().contains("alternate"));
    }

    #[test]
    fn fixed_template_uses_one_instruction_and_the_record_as_input() {
        let r = rec(r#"{"instruction":"我头疼，怎么办？","input":"","output":"多休息。"}"#);
        let (p, resp) = render(&r, &t(TrainTemplate::Fixed)).unwrap();
        assert_eq!(p, prompt::instruct(MEDICAL_INSTRUCTION, Some("我头疼，怎么办？")));
        assert_eq!(resp, "多休息。");
        let (p, _) = render(&r, &t(TrainTemplate::Instruct)).unwrap();
        assert_eq!(p, prompt::instruct("我头疼，怎么办？", None));
        let (p, resp) = render(&r, &t(TrainTemplate::Alpaca)).unwrap();
        assert_eq!((p.as_str(), resp.as_str()), (prompt::alpaca("我头疼，怎么办？", None).as_str(), "多休息。"));
        assert!(p.ends_with("### Instruction:\n我头疼，怎么办？\n\n### Response:\n"), "{p}");
        assert!(render(&rec(r#"{"text":"abc"}"#), &t(TrainTemplate::Instruct)).is_err());
        assert_eq!(render(&rec(r#"{"text":"abc"}"#), &t(TrainTemplate::None)).unwrap(), (String::new(), "abc".into()));
    }

    #[test]
    fn jsonl_and_arrays_report_the_line() {
        let d = std::env::temp_dir().join(format!("vicugna-data-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("a.jsonl");
        std::fs::write(&p, "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"a\"}\n").unwrap();
        let e = read_file(&p, false, &mut vec![]).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: bad record: missing `output`", p.display())), "{e}");
        let mut skipped = vec![];
        assert_eq!(read_file(&p, true, &mut skipped).unwrap().len(), 1);
        assert_eq!(skipped.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
