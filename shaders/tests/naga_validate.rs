//! Every kernel and every define combination parses and validates with naga, with no optional
//! capabilities (no shader-f16, no subgroups) — what SwiftShader/WebGPU gives us. No GPU needed.

use vicugna_shaders::{preprocess, KERNELS};

#[test]
fn every_kernel_and_define_set_validates_without_optional_capabilities() {
    let mut checked = 0;
    for k in KERNELS {
        for defs in k.define_sets {
            let src = preprocess(k.source, defs);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{} {defs:?}:\n{}", k.name, e.emit_to_string(&src)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{} {defs:?}: {}", k.name, e.emit_to_string(&src)));
            for e in k.entries {
                let ep = module
                    .entry_points
                    .iter()
                    .find(|ep| ep.name == *e)
                    .unwrap_or_else(|| panic!("{}: entry `{e}` missing", k.name));
                let size: u32 = ep.workgroup_size.iter().product();
                assert!(size <= 256, "{}::{e}: {size} invocations per workgroup (WebGPU allows 256)", k.name);
            }
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked}");
}
