//! Every kernel and every define combination parses and validates with naga, with no optional
//! capabilities (no shader-f16, no subgroups) — what SwiftShader/WebGPU gives us. No GPU needed.

use vicugna_shaders::kernels::{param_layouts, MATMUL_ROWS, MATMUL_TILE};
use vicugna_shaders::{compile_source, Family};

#[test]
fn every_kernel_and_define_set_validates_without_optional_capabilities() {
    let mut checked = 0;
    for f in Family::ALL {
        for variant in f.all_variants() {
            let defs = variant.defines();
            let src = compile_source(f, &defs);
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

/// Each family's WGSL parameter struct (generated from the Rust one) has the Rust struct's fields,
/// in order, at the same size: what the dispatcher writes is what the kernel reads.
#[test]
fn parameter_blocks_have_the_same_layout_in_rust_and_wgsl() {
    let layouts = param_layouts();
    assert_eq!(layouts.len(), Family::ALL.len(), "one parameter block per family");
    for (family, name, fields, size) in layouts {
        let src = compile_source(family, &family.all_variants()[0].defines());
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let (handle, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some(name)).expect("struct present");
        let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{name} is not a struct") };
        let names: Vec<&str> = members.iter().map(|m| m.name.as_deref().unwrap_or("")).collect();
        let want: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(names, want, "{name}");
        assert_eq!(*span as usize, size, "{name}: WGSL size");
        assert_eq!(layouter[handle].size as usize, size, "{name}: WGSL layout");
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.offset as usize, 4 * i, "{name}.{}: every field is 4 bytes, packed", want[i]);
        }
    }
}

#[test]
fn matmul_tile_sizes_agree_with_the_dispatcher() {
    let src = Family::Matmul.source();
    assert!(src.contains(&format!("const RB: u32 = {MATMUL_ROWS}u;")), "matmul.wgsl RB != MATMUL_ROWS");
    assert!(src.contains(&format!("const TT: u32 = {MATMUL_TILE}u;")), "matmul.wgsl TT != MATMUL_TILE");
    assert_eq!(src.matches("store_tile(r0, t0 + ").count(), MATMUL_TILE, "tokens spelled out in `tiled`");
    assert!(src.contains(&format!("-> array<u32, {MATMUL_ROWS}>")), "rows spelled out in `tile_rows`");
}
