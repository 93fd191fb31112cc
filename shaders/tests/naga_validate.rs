//! Every kernel and every define combination parses and validates with naga, with no optional
//! capabilities (no shader-f16, no subgroups) — what SwiftShader/WebGPU gives us. No GPU needed.

use vicugna_shaders::{preprocess, Family};

#[test]
fn every_kernel_and_define_set_validates_without_optional_capabilities() {
    let mut checked = 0;
    for f in Family::ALL {
        for variant in f.all_variants() {
            let defs = variant.defines();
            let src = preprocess(f.source(), &defs);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{} {defs:?}:\n{}", f.name(), e.emit_to_string(&src)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{} {defs:?}: {}", f.name(), e.emit_to_string(&src)));
            let mut entries = 0;
            for e in f.entries() {
                let ep = module
                    .entry_points
                    .iter()
                    .find(|ep| ep.name == e.name())
                    .unwrap_or_else(|| panic!("{}: entry `{}` missing", f.name(), e.name()));
                let size: u32 = ep.workgroup_size.iter().product();
                assert!(size <= 256, "{e:?}: {size} invocations per workgroup (WebGPU allows 256)");
                entries += 1;
            }
            // every entry point of the file is one the backend can name
            assert_eq!(entries, module.entry_points.len(), "{}: an entry point without an `Entry`", f.name());
            checked += 1;
        }
    }
    // 12 matmul, 6 embed, 8 plain families
    assert_eq!(checked, 26);
}
