//! Kernel sources, their define combinations, and the parameter block they share.

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

/// A kernel family: its file, entry points and every define combination the backend uses.
pub struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
    pub define_sets: &'static [&'static [&'static str]],
}

const FORMATS: &[&[&str]] =
    &[&["F32"], &["F16"], &["Q8_0", "QUANT"], &["Q4_0", "QUANT"], &["Q4_M", "QUANT"], &["Q8_S16", "QUANT"]];

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "matmul",
        source: include_str!("../wgsl/matmul.wgsl"),
        entries: &["main", "rowwise"],
        define_sets: &[
            &["F32"],
            &["F16"],
            &["Q8_0", "QUANT"],
            &["Q4_0", "QUANT"],
            &["Q4_M", "QUANT"],
            &["Q8_S16", "QUANT"],
            &["F32", "LORA"],
            &["F16", "LORA"],
            &["Q8_0", "QUANT", "LORA"],
            &["Q4_0", "QUANT", "LORA"],
            &["Q4_M", "QUANT", "LORA"],
            &["Q8_S16", "QUANT", "LORA"],
        ],
    },
    Kernel { name: "embed", source: include_str!("../wgsl/embed.wgsl"), entries: &["main"], define_sets: FORMATS },
    Kernel {
        name: "lora",
        source: include_str!("../wgsl/lora.wgsl"),
        entries: &["lora_a", "lora_b_add"],
        define_sets: &[&[]],
    },
    Kernel {
        name: "norm",
        source: include_str!("../wgsl/norm.wgsl"),
        entries: &["rmsnorm", "rmsnorm_inplace"],
        define_sets: &[&[]],
    },
    Kernel { name: "rope", source: include_str!("../wgsl/rope.wgsl"), entries: &["main"], define_sets: &[&[]] },
    Kernel {
        name: "attention",
        source: include_str!("../wgsl/attention.wgsl"),
        entries: &["main"],
        define_sets: &[&[]],
    },
    Kernel { name: "copy", source: include_str!("../wgsl/copy.wgsl"), entries: &["main"], define_sets: &[&[]] },
    Kernel { name: "sample", source: include_str!("../wgsl/sample.wgsl"), entries: &["main"], define_sets: &[&[]] },
    Kernel { name: "argmax", source: include_str!("../wgsl/argmax.wgsl"), entries: &["main"], define_sets: &[&[]] },
    Kernel {
        name: "elementwise",
        source: include_str!("../wgsl/elementwise.wgsl"),
        entries: &["silu_mul", "add", "gelu_mul", "scale"],
        define_sets: &[&[]],
    },
];

pub fn kernel(name: &str) -> &'static Kernel {
    KERNELS.iter().find(|k| k.name == name).expect("known kernel")
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
