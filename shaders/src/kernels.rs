//! Kernel sources (`Family`), their entry points (`Entry`), the define combinations they are
//! compiled with (`Variant`, including the one format → defines table), and the parameter block
//! they share.

/// Mirrors `struct Params` in `wgsl/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub rows: u32,
    pub cols: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub d: u32,
    pub grid_x: u32,
    pub f0: f32,
    pub f1: f32,
    pub f2: f32,
    pub f3: f32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 48);

pub const COMMON: &str = include_str!("../wgsl/common.wgsl");

/// How a weight matrix is laid out on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    F32,
    F16,
    /// int8 quants with one f32 scale per 32 (Q8_0, and Q5_0 losslessly).
    Q8_0,
    /// Q4_0's nibbles (q - 8) with one f32 scale per 32.
    Q4_0,
    /// Nibbles 0..15 with an f32 (scale, min) per 32: Q4_K and Q4_1, losslessly.
    Q4M,
    /// int8 quants with one f32 scale per 16: Q6_K, losslessly.
    Q8S16,
}

impl Format {
    pub const ALL: [Format; 6] = [Format::F32, Format::F16, Format::Q8_0, Format::Q4_0, Format::Q4M, Format::Q8S16];

    /// The WGSL defines that select this format's loads (`#if Q4_0` …): the one table.
    pub fn defines(self) -> &'static [&'static str] {
        match self {
            Format::F32 => &["F32"],
            Format::F16 => &["F16"],
            Format::Q8_0 => &["Q8_0", "QUANT"],
            Format::Q4_0 => &["Q4_0", "QUANT"],
            Format::Q4M => &["Q4_M", "QUANT"],
            Format::Q8S16 => &["Q8_S16", "QUANT"],
        }
    }
}

/// Which define combinations a kernel family is compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variants {
    /// One, no defines.
    Plain,
    /// One per weight format.
    Formats,
    /// One per weight format, with and without `LORA`.
    FormatsLora,
}

/// One compilation of a kernel family: the defines it is specialised by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Plain,
    Format(Format),
    /// The projection kernel with the unmerged LoRA branch fused in.
    FormatLora(Format),
}

impl Variant {
    pub fn defines(self) -> Vec<&'static str> {
        match self {
            Variant::Plain => Vec::new(),
            Variant::Format(f) => f.defines().to_vec(),
            Variant::FormatLora(f) => [f.defines(), &["LORA"]].concat(),
        }
    }
}

/// A kernel family: one `.wgsl` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Matmul,
    Embed,
    Lora,
    Norm,
    Rope,
    Attention,
    Copy,
    Sample,
    Argmax,
    Elementwise,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Matmul,
        Family::Embed,
        Family::Lora,
        Family::Norm,
        Family::Rope,
        Family::Attention,
        Family::Copy,
        Family::Sample,
        Family::Argmax,
        Family::Elementwise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Embed => "embed",
            Family::Lora => "lora",
            Family::Norm => "norm",
            Family::Rope => "rope",
            Family::Attention => "attention",
            Family::Copy => "copy",
            Family::Sample => "sample",
            Family::Argmax => "argmax",
            Family::Elementwise => "elementwise",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Family::Matmul => include_str!("../wgsl/matmul.wgsl"),
            Family::Embed => include_str!("../wgsl/embed.wgsl"),
            Family::Lora => include_str!("../wgsl/lora.wgsl"),
            Family::Norm => include_str!("../wgsl/norm.wgsl"),
            Family::Rope => include_str!("../wgsl/rope.wgsl"),
            Family::Attention => include_str!("../wgsl/attention.wgsl"),
            Family::Copy => include_str!("../wgsl/copy.wgsl"),
            Family::Sample => include_str!("../wgsl/sample.wgsl"),
            Family::Argmax => include_str!("../wgsl/argmax.wgsl"),
            Family::Elementwise => include_str!("../wgsl/elementwise.wgsl"),
        }
    }

    pub fn variants(self) -> Variants {
        match self {
            Family::Matmul => Variants::FormatsLora,
            Family::Embed => Variants::Formats,
            _ => Variants::Plain,
        }
    }

    /// Every compilation the backend may ask for.
    pub fn all_variants(self) -> Vec<Variant> {
        let formats = Format::ALL.into_iter();
        match self.variants() {
            Variants::Plain => vec![Variant::Plain],
            Variants::Formats => formats.map(Variant::Format).collect(),
            Variants::FormatsLora => {
                formats.clone().map(Variant::Format).chain(formats.map(Variant::FormatLora)).collect()
            }
        }
    }

    pub fn entries(self) -> impl Iterator<Item = Entry> {
        Entry::ALL.into_iter().filter(move |e| e.family() == self)
    }
}

/// A WGSL entry point: the pipeline key with a `Variant` (no strings built per dispatch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    Matmul,
    MatmulRowwise,
    Embed,
    LoraA,
    LoraBAdd,
    RmsNorm,
    RmsNormInplace,
    Rope,
    Attention,
    AttentionPartial,
    AttentionCombine,
    Copy,
    Sample,
    Argmax,
    SiluMul,
    Add,
    GeluMul,
    Scale,
}

impl Entry {
    pub const ALL: [Entry; 18] = [
        Entry::Matmul,
        Entry::MatmulRowwise,
        Entry::Embed,
        Entry::LoraA,
        Entry::LoraBAdd,
        Entry::RmsNorm,
        Entry::RmsNormInplace,
        Entry::Rope,
        Entry::Attention,
        Entry::AttentionPartial,
        Entry::AttentionCombine,
        Entry::Copy,
        Entry::Sample,
        Entry::Argmax,
        Entry::SiluMul,
        Entry::Add,
        Entry::GeluMul,
        Entry::Scale,
    ];

    /// (family, WGSL function name).
    pub fn def(self) -> (Family, &'static str) {
        use Family as F;
        match self {
            Entry::Matmul => (F::Matmul, "main"),
            Entry::MatmulRowwise => (F::Matmul, "rowwise"),
            Entry::Embed => (F::Embed, "main"),
            Entry::LoraA => (F::Lora, "lora_a"),
            Entry::LoraBAdd => (F::Lora, "lora_b_add"),
            Entry::RmsNorm => (F::Norm, "rmsnorm"),
            Entry::RmsNormInplace => (F::Norm, "rmsnorm_inplace"),
            Entry::Rope => (F::Rope, "main"),
            Entry::Attention => (F::Attention, "main"),
            Entry::AttentionPartial => (F::Attention, "partial"),
            Entry::AttentionCombine => (F::Attention, "combine"),
            Entry::Copy => (F::Copy, "main"),
            Entry::Sample => (F::Sample, "main"),
            Entry::Argmax => (F::Argmax, "main"),
            Entry::SiluMul => (F::Elementwise, "silu_mul"),
            Entry::Add => (F::Elementwise, "add"),
            Entry::GeluMul => (F::Elementwise, "gelu_mul"),
            Entry::Scale => (F::Elementwise, "scale"),
        }
    }

    pub fn family(self) -> Family {
        self.def().0
    }

    pub fn name(self) -> &'static str {
        self.def().1
    }
}

/// `common.wgsl` + the kernel with `#if NAME` / `#else` / `#endif` blocks resolved (nesting
/// allowed). Unknown directives are left for the WGSL parser to reject.
pub fn preprocess(src: &str, defines: &[&str]) -> String {
    let mut out = String::from(COMMON);
    out.push('\n');
    let mut stack: Vec<(bool, bool)> = Vec::new(); // (this branch active, parent active)
    let active = |s: &Vec<(bool, bool)>| s.last().is_none_or(|&(a, p)| a && p);
    for line in src.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("#if ") {
            let parent = active(&stack);
            stack.push((defines.contains(&name.trim()), parent));
        } else if t == "#else" {
            if let Some(top) = stack.last_mut() {
                top.0 = !top.0;
            }
        } else if t == "#endif" {
            stack.pop();
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push('\n'); // keep line numbers stable for error messages
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_selects_branches() {
        let s = "a\n#if X\nb\n#if Y\nc\n#endif\n#else\nd\n#endif\ne\n";
        let body = |d: &[&str]| preprocess(s, d)[COMMON.len() + 1..].split_whitespace().collect::<Vec<_>>().join("");
        assert_eq!(body(&["X", "Y"]), "abce");
        assert_eq!(body(&["X"]), "abe");
        assert_eq!(body(&[]), "ade");
    }
}
