//! Kernel sources (`Family`), their entry points (`Entry`), the define combinations they are
//! compiled with (`Variant`, including the one format → defines table), and each family's typed
//! parameter block (`KernelParams`, its WGSL struct generated from the Rust one).

/// A kernel family's parameter block: a `#[repr(C)]` struct of u32/f32 fields whose WGSL twin is
/// generated from the same field list ([`KernelParams::wgsl`], prepended to the family's source),
/// so the two cannot drift; naga checks the layout matches (`tests/naga_validate.rs`).
pub trait KernelParams: bytemuck::Pod {
    const FAMILY: Family;
    const NAME: &'static str;
    /// (field, WGSL type) in order.
    const FIELDS: &'static [(&'static str, &'static str)];
    /// The dispatcher folds long launches into (x, y) and tells the kernel the x extent.
    fn set_grid_x(&mut self, x: u32);
    fn wgsl() -> String {
        let fields: Vec<String> = Self::FIELDS.iter().map(|(f, t)| format!("    {f}: {t},")).collect();
        format!("struct {} {{\n{}\n}}\n", Self::NAME, fields.join("\n"))
    }
}

macro_rules! params {
    ($(#[$m:meta])* $name:ident for $fam:ident { $($(#[$fm:meta])* $f:ident : $t:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
        }
        impl KernelParams for $name {
            const FAMILY: Family = Family::$fam;
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($f), stringify!($t))),*];
            fn set_grid_x(&mut self, x: u32) {
                self.grid_x = x;
            }
        }
        const _: () = assert!(std::mem::size_of::<$name>() % 16 == 0, "uniform blocks are whole 16-byte rows");
        const _: () = assert!(std::mem::size_of::<$name>() <= UNIFORM_BYTES);
    };
}

/// Tokens per invocation of `Entry::MatmulTiled` (`TT` in matmul.wgsl).
pub const MATMUL_TILE: usize = 16;

/// Rows per invocation of `Entry::MatmulRowwise` and `Entry::MatmulTiled` (`RB` in matmul.wgsl).
pub const MATMUL_ROWS: usize = 8;

/// The size of every uniform buffer the dispatcher binds (the largest parameter block fits).
pub const UNIFORM_BYTES: usize = 64;

params! {
    /// `matmul.wgsl`: out (n, total_rows)[.., row0..row0+rows] = x (n, cols) · Wᵀ (+ the fused LoRA).
    MatmulParams for Matmul {
        /// Tokens (rows of x).
        n: u32,
        /// Rows of W in this part.
        rows: u32,
        cols: u32,
        /// Quant blocks per row (cols / 32).
        blocks: u32,
        /// The fused LoRA's rank.
        rank: u32,
        /// This part's first row.
        row0: u32,
        /// Rows of the whole W (out's row stride).
        total_rows: u32,
        grid_x: u32,
        /// The fused LoRA's scale × weight.
        lora_scale: f32,
        pad0: u32,
        pad1: u32,
        pad2: u32,
    }
}

params! {
    /// `embed.wgsl`: out[t] = table[tokens[t]] for the rows in this part.
    EmbedParams for Embed {
        n: u32,
        rows: u32,
        cols: u32,
        blocks: u32,
        row0: u32,
        grid_x: u32,
        pad0: u32,
        pad1: u32,
    }
}

params! {
    /// `lora.wgsl`: ax = x Aᵀ (n, rank), then out += scale · ax Bᵀ.
    LoraParams for Lora {
        n: u32,
        /// Output features (B's rows).
        rows: u32,
        /// Input features (A's columns).
        cols: u32,
        rank: u32,
        scale: f32,
        grid_x: u32,
        pad0: u32,
        pad1: u32,
    }
}

params! {
    /// `norm.wgsl`: RMSNorm of `rows` rows of `cols`.
    NormParams for Norm {
        rows: u32,
        cols: u32,
        eps: f32,
        grid_x: u32,
    }
}

params! {
    /// `rope.wgsl`: rotate `heads` heads of every token, token t at position pos0 + t.
    RopeParams for Rope {
        n: u32,
        heads: u32,
        head_dim: u32,
        pos0: u32,
        /// 1: pairs (2i, 2i+1); 0: (i, i + head_dim/2).
        interleaved: u32,
        grid_x: u32,
        pad0: u32,
        pad1: u32,
    }
}

params! {
    /// `attention.wgsl`: causal grouped-query attention of n tokens at pos0.. over the cache.
    AttentionParams for Attention {
        n: u32,
        heads: u32,
        head_dim: u32,
        pos0: u32,
        kv_heads: u32,
        /// 0: none; else a row sees only its last `window` positions.
        window: u32,
        scale: f32,
        /// `main`: the scratch row stride (positions).
        stride: u32,
        /// `partial`/`combine`: the number of chunks and their length in positions.
        chunks: u32,
        chunk_len: u32,
        grid_x: u32,
        pad0: u32,
    }
}

params! {
    /// `copy.wgsl`: n vec4s.
    CopyParams for Copy {
        n: u32,
        grid_x: u32,
        pad0: u32,
        pad1: u32,
    }
}

params! {
    /// `sample.wgsl`: temperature, top-k, top-p, then the draw with uniform `u`, over n logits.
    SampleParams for Sample {
        n: u32,
        top_k: u32,
        temperature: f32,
        top_p: f32,
        u: f32,
        grid_x: u32,
        pad0: u32,
        pad1: u32,
    }
}

params! {
    /// `argmax.wgsl`: the first maximum of n values.
    ArgmaxParams for Argmax {
        n: u32,
        grid_x: u32,
        pad0: u32,
        pad1: u32,
    }
}

params! {
    /// `elementwise.wgsl`: n elements (`scale` multiplies by `factor`).
    ElementwiseParams for Elementwise {
        n: u32,
        grid_x: u32,
        factor: f32,
        pad0: u32,
    }
}

/// A parameter block's layout: (family, struct name, (field, WGSL type)s, size in bytes).
pub type ParamLayout = (Family, &'static str, &'static [(&'static str, &'static str)], usize);

/// Every family's parameter block.
pub fn param_layouts() -> Vec<ParamLayout> {
    fn one<P: KernelParams>() -> ParamLayout {
        (P::FAMILY, P::NAME, P::FIELDS, std::mem::size_of::<P>())
    }
    vec![
        one::<MatmulParams>(),
        one::<EmbedParams>(),
        one::<LoraParams>(),
        one::<NormParams>(),
        one::<RopeParams>(),
        one::<AttentionParams>(),
        one::<CopyParams>(),
        one::<SampleParams>(),
        one::<ArgmaxParams>(),
        one::<ElementwiseParams>(),
    ]
}

/// The WGSL struct of a family's parameter block.
pub fn params_wgsl(f: Family) -> String {
    fn w<P: KernelParams>() -> String {
        P::wgsl()
    }
    match f {
        Family::Matmul => w::<MatmulParams>(),
        Family::Embed => w::<EmbedParams>(),
        Family::Lora => w::<LoraParams>(),
        Family::Norm => w::<NormParams>(),
        Family::Rope => w::<RopeParams>(),
        Family::Attention => w::<AttentionParams>(),
        Family::Copy => w::<CopyParams>(),
        Family::Sample => w::<SampleParams>(),
        Family::Argmax => w::<ArgmaxParams>(),
        Family::Elementwise => w::<ElementwiseParams>(),
    }
}

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
            Format::Q4_0 => &["Q4_0", "QUANT", "NIBBLES"],
            Format::Q4M => &["Q4_M", "QUANT", "NIBBLES"],
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
    /// Prefill on CPU adapters: `MATMUL_ROWS` rows × `MATMUL_TILE` tokens per invocation.
    MatmulTiled,
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
    pub const ALL: [Entry; 19] = [
        Entry::Matmul,
        Entry::MatmulRowwise,
        Entry::MatmulTiled,
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
            Entry::MatmulTiled => (F::Matmul, "tiled"),
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

/// `common.wgsl` + the family's parameter struct + its source with `#if NAME` / `#else` / `#endif`
/// blocks resolved (nesting allowed). Unknown directives are left for the WGSL parser to reject.
pub fn compile_source(f: Family, defines: &[&str]) -> String {
    let mut out = String::from(COMMON);
    out.push('\n');
    out.push_str(&params_wgsl(f));
    out.push_str(&preprocess(f.source(), defines));
    out
}

/// `src` with `#if NAME` / `#else` / `#endif` blocks resolved (nesting allowed).
pub fn preprocess(src: &str, defines: &[&str]) -> String {
    let mut out = String::new();
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
        let body = |d: &[&str]| preprocess(s, d).split_whitespace().collect::<Vec<_>>().join("");
        assert_eq!(body(&["X", "Y"]), "abce");
        assert_eq!(body(&["X"]), "abe");
        assert_eq!(body(&[]), "ade");
    }
}
