//! The few facts the `http` probe takes from the kernel's BTF (`/sys/kernel/btf/vmlinux`) to
//! read a task's user registers without a helper call: the offset of `stack` in
//! `struct task_struct`, and the type ids of `struct pt_regs` and of the kfunc
//! `bpf_rdonly_cast`. One pass over the type section (format: the kernel's
//! Documentation/bpf/btf.rst).

/// What the socket hooks need (see `agent_common::http::GLOBAL_TASK_STACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegsLayout {
    /// Byte offset of `task_struct.stack`.
    pub task_stack: u32,
    /// Type id of `struct pt_regs`.
    pub pt_regs: u32,
    /// Type id of the `FUNC` `bpf_rdonly_cast`.
    pub rdonly_cast: u32,
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;

/// Bytes after the 12-byte common part of a type of kind `kind` with `vlen` entries.
fn trailing(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // INT, VAR, DECL_TAG: one u32.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: nothing.
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY: type, index type, count.
        3 => 12,
        // STRUCT, UNION, DATASEC, ENUM64: 12 bytes per entry.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO: 8 bytes per entry.
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The NUL-terminated string at `off` of the string section `strs`.
fn name_at(strs: &[u8], off: u32) -> &[u8] {
    let s = strs.get(off as usize..).unwrap_or_default();
    &s[..s.iter().position(|b| *b == 0).unwrap_or(s.len())]
}

/// Finds the [`RegsLayout`] in the raw BTF `data` (native byte order, as the kernel exports
/// it). The error names what is missing or malformed.
pub fn regs_layout(data: &[u8]) -> Result<RegsLayout, String> {
    let magic = data
        .get(..2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or("shorter than its header")?;
    if magic != MAGIC {
        return Err(format!("magic {magic:#x}, not {MAGIC:#x}"));
    }
    let field = |at| u32_at(data, at).ok_or("shorter than its header");
    let hdr_len = field(4)? as usize;
    let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
    let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
    let section = |off: usize, len: usize, what: &str| {
        hdr_len
            .checked_add(off)
            .and_then(|s| Some(s..s.checked_add(len)?))
            .and_then(|r| data.get(r))
            .ok_or(format!("its {what} section runs past the end"))
    };
    let types = section(type_off, type_len, "type")?;
    let strs = section(str_off, str_len, "string")?;
    let (mut task_stack, mut pt_regs, mut rdonly_cast) = (None, None, None);
    let mut at = 0usize;
    let mut id = 1u32;
    while at < types.len() {
        let bad = || format!("type {id} at byte {at} of the type section is cut short");
        let name_off = u32_at(types, at).ok_or_else(bad)?;
        let info = u32_at(types, at + 4).ok_or_else(bad)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra =
            trailing(kind, vlen).ok_or_else(|| format!("type {id} has unknown kind {kind}"))?;
        let body = at + 12;
        let name = name_at(strs, name_off);
        if kind == KIND_STRUCT && name == b"pt_regs" {
            pt_regs = Some(id);
        } else if kind == KIND_FUNC && name == b"bpf_rdonly_cast" {
            rdonly_cast = Some(id);
        } else if kind == KIND_STRUCT && name == b"task_struct" {
            let kind_flag = info >> 31 == 1;
            for m in 0..vlen {
                let e = body + 12 * m;
                let (m_name, m_off) = (u32_at(types, e), u32_at(types, e + 8));
                let (Some(m_name), Some(m_off)) = (m_name, m_off) else {
                    return Err(bad());
                };
                if name_at(strs, m_name) == b"stack" {
                    // With the kind flag, the low 24 bits are the bit offset.
                    let bits = if kind_flag { m_off & 0xff_ffff } else { m_off };
                    if !bits.is_multiple_of(8) {
                        return Err(format!("task_struct.stack at bit {bits}"));
                    }
                    task_stack = Some(bits / 8);
                }
            }
        }
        at = body + extra;
        id += 1;
    }
    Ok(RegsLayout {
        task_stack: task_stack
            .filter(|o| *o > 0)
            .ok_or("no member stack in struct task_struct")?,
        pt_regs: pt_regs.ok_or("no struct pt_regs")?,
        rdonly_cast: rdonly_cast.ok_or("no function bpf_rdonly_cast (kernels before 6.2)")?,
    })
}

/// Rewrites each helper call by number `placeholder` in `object` (an ELF eBPF object) into a
/// call of the kernel function of BTF id `func` (`BPF_PSEUDO_KFUNC_CALL`, in vmlinux's BTF).
/// Returns how many calls it rewrote. The instruction is matched whole (opcode, registers,
/// offset 0, the number), which nothing else in an object spells.
pub fn patch_kfunc_calls(object: &mut [u8], placeholder: u32, func: u32) -> usize {
    const CALL: u8 = 0x85;
    const PSEUDO_KFUNC_CALL: u8 = 2;
    let mut want = [CALL, 0, 0, 0, 0, 0, 0, 0];
    want[4..].copy_from_slice(&placeholder.to_le_bytes());
    let mut n = 0;
    let mut at = 0;
    while at + 8 <= object.len() {
        if object[at..at + 8] == want {
            object[at + 1] = PSEUDO_KFUNC_CALL << 4;
            object[at + 4..at + 8].copy_from_slice(&func.to_le_bytes());
            n += 1;
            at += 8;
        } else {
            at += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types` (each: name offset, info, size/type, then its trailing bytes) and
    /// the string section `strs`.
    fn blob(types: &[Vec<u32>], strs: &[u8]) -> Vec<u8> {
        let t: Vec<u8> = types
            .iter()
            .flatten()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, t.len() as u32, t.len() as u32, strs.len() as u32] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(strs);
        b
    }

    const STRS: &[u8] = b"\0pt_regs\0task_struct\0stack\0bpf_rdonly_cast\0int\0usage\0";

    fn types(stack_bits: u32, kind_flag: bool) -> Vec<Vec<u32>> {
        let flag = u32::from(kind_flag) << 31;
        vec![
            // 1: int (INT, one trailing word).
            vec![43, 1 << 24, 4, 32],
            // 2: struct pt_regs, no members.
            vec![1, 4 << 24, 168],
            // 3: struct task_struct { usage at 0, stack at stack_bits }.
            vec![9, flag | 4 << 24 | 2, 64, 47, 1, 0, 21, 1, stack_bits],
            // 4: FUNC bpf_rdonly_cast.
            vec![27, 12 << 24, 1],
        ]
    }

    #[test]
    fn finds_the_three_facts() {
        let b = blob(&types(256, false), STRS);
        assert_eq!(
            regs_layout(&b),
            Ok(RegsLayout {
                task_stack: 32,
                pt_regs: 2,
                rdonly_cast: 4
            })
        );
        // With the kind flag, a bitfield size may sit in the high byte.
        let b = blob(&types(256 | 3 << 24, true), STRS);
        assert_eq!(regs_layout(&b).map(|l| l.task_stack), Ok(32));
    }

    #[test]
    fn missing_or_malformed_input_is_an_error_that_says_what() {
        let mut t = types(256, false);
        t.pop();
        assert!(
            regs_layout(&blob(&t, STRS))
                .unwrap_err()
                .contains("bpf_rdonly_cast")
        );
        assert!(
            regs_layout(&blob(&types(260, false), STRS))
                .unwrap_err()
                .contains("bit 260")
        );
        let b = blob(&types(256, false), STRS);
        assert!(
            regs_layout(&b[..b.len() - 70])
                .unwrap_err()
                .contains("past the end")
        );
        assert!(regs_layout(&[0x9f]).unwrap_err().contains("header"));
        assert!(regs_layout(&[0; 24]).unwrap_err().contains("magic"));
        let mut t = types(256, false);
        t[0][1] = 30 << 24;
        assert!(
            regs_layout(&blob(&t, STRS))
                .unwrap_err()
                .contains("unknown kind 30")
        );
        // Every prefix: an error or the answer, never a panic.
        for n in 0..b.len() {
            let _ = regs_layout(&b[..n]);
        }
    }

    /// The running kernel's BTF, where there is one: `pt_regs` is the x86_64 frame the
    /// kernel programs read at fixed offsets (168 bytes).
    #[test]
    fn the_running_kernels_btf() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("SKIPPED: the_running_kernels_btf: /sys/kernel/btf/vmlinux unreadable");
            return;
        };
        let l = regs_layout(&data).unwrap();
        assert!(l.task_stack > 0 && l.task_stack.is_multiple_of(8), "{l:?}");
        let btf = aya::Btf::from_sys_fs().unwrap();
        assert_eq!(
            btf.id_by_type_name_kind("pt_regs", aya_obj::btf::BtfKind::Struct)
                .unwrap(),
            l.pt_regs
        );
        assert_eq!(
            btf.id_by_type_name_kind("bpf_rdonly_cast", aya_obj::btf::BtfKind::Func)
                .unwrap(),
            l.rdonly_cast
        );
    }

    #[test]
    fn rewrites_each_placeholder_call_and_nothing_else() {
        let ph = 0x0b7f_ca57u32;
        let call = |imm: u32| {
            let mut i = vec![0x85u8, 0, 0, 0];
            i.extend_from_slice(&imm.to_le_bytes());
            i
        };
        let mut obj = vec![7u8; 3];
        obj.extend(call(ph));
        obj.extend(call(175));
        obj.extend(call(ph));
        // The number as a move's immediate is not a call.
        obj.extend([0xb7, 1, 0, 0]);
        obj.extend(ph.to_le_bytes());
        let before = obj.clone();
        assert_eq!(patch_kfunc_calls(&mut obj, ph, 65504), 2);
        let mut kcall = vec![0x85u8, 0x20, 0, 0];
        kcall.extend(65504u32.to_le_bytes());
        assert_eq!(obj[3..11], kcall[..]);
        assert_eq!(obj[11..19], before[11..19]);
        assert_eq!(obj[19..27], kcall[..]);
        assert_eq!(obj[27..], before[27..]);
    }
}
