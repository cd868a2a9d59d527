//! Pointer fix-up: decide what a pointer-typed value of the source means (a stack object, a
//! symbol, or something left alone) and compute its destination value.

/// A named stack object (variable) copied from source to destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackObject {
    /// Source address.
    pub src: u64,
    /// Size in bytes.
    pub size: u64,
    /// Destination address.
    pub dst: u64,
    /// Frame index (0 = innermost application frame).
    pub frame: usize,
    /// `function.variable` for messages.
    pub label: String,
}

/// Sorted set of stack objects with address lookup.
#[derive(Clone, Debug, Default)]
pub struct ObjectMap {
    objs: Vec<StackObject>,
}

impl ObjectMap {
    /// Build from objects (sorted here).
    pub fn new(mut objs: Vec<StackObject>) -> Self {
        objs.sort_by_key(|o| o.src);
        ObjectMap { objs }
    }

    /// The object containing `addr`, else the object `addr` is one past the end of.
    pub fn find(&self, addr: u64) -> Option<&StackObject> {
        let i = self.objs.partition_point(|o| o.src <= addr);
        let inside = i
            .checked_sub(1)
            .and_then(|j| self.objs.get(j))
            .filter(|o| addr < o.src + o.size.max(1));
        inside.or_else(|| {
            self.objs
                .get(i.checked_sub(1)?)
                .filter(|o| addr == o.src + o.size)
        })
    }

    /// All objects in source-address order.
    pub fn iter(&self) -> impl Iterator<Item = &StackObject> {
        self.objs.iter()
    }
}

/// What a source pointer value turned into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointerFix {
    /// Points into (or one past) a copied stack object: rewritten.
    Stack {
        /// New value.
        value: u64,
        /// Object label.
        label: String,
        /// Offset inside the object.
        offset: u64,
    },
    /// Points into a symbol whose address differs: rewritten to the same symbol + offset.
    Symbol {
        /// New value.
        value: u64,
        /// Symbol name.
        name: String,
    },
    /// Points into the live source stack but at no named object: left unchanged.
    UnnamedStack,
    /// Points into the source stack below the innermost live frame: left unchanged.
    Dangling,
    /// Anything else (NULL, heap, aligned globals and code): unchanged.
    Unchanged,
}

/// Classify and translate one pointer value.
///
/// `live` is the source's live application stack `[innermost SP, outermost CFA)`, `stack` the
/// whole source stack image; `symbol` maps a value inside a symbol to its destination value
/// (returning `None` when the symbol is at the same address or unknown).
pub fn fix_pointer(
    value: u64,
    objects: &ObjectMap,
    live: (u64, u64),
    stack: (u64, u64),
    symbol: impl Fn(u64) -> Option<(u64, String)>,
) -> PointerFix {
    if let Some(o) = objects.find(value) {
        let offset = value - o.src;
        return PointerFix::Stack {
            value: o.dst + offset,
            label: o.label.clone(),
            offset,
        };
    }
    if value >= live.0 && value < live.1 {
        return PointerFix::UnnamedStack;
    }
    if value >= stack.0 && value < live.0 {
        return PointerFix::Dangling;
    }
    if value >= stack.0 && value < stack.1 {
        // Above the outermost translated frame (argv, environment, libc frames).
        return PointerFix::UnnamedStack;
    }
    match symbol(value) {
        Some((value, name)) => PointerFix::Symbol { value, name },
        None => PointerFix::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objs() -> ObjectMap {
        ObjectMap::new(vec![
            StackObject {
                src: 0x7f00,
                size: 16,
                dst: 0x5f00,
                frame: 1,
                label: "main.arr".into(),
            },
            StackObject {
                src: 0x7e00,
                size: 4,
                dst: 0x5e10,
                frame: 0,
                label: "f.depth".into(),
            },
            StackObject {
                src: 0x7e04,
                size: 8,
                dst: 0x5e20,
                frame: 0,
                label: "f.x".into(),
            },
        ])
    }

    fn none(_: u64) -> Option<(u64, String)> {
        None
    }

    #[test]
    fn stack_objects_are_rewritten_by_offset() {
        let o = objs();
        let live = (0x7d00, 0x8000);
        let stack = (0x7000, 0x9000);
        assert_eq!(
            fix_pointer(0x7f08, &o, live, stack, none),
            PointerFix::Stack {
                value: 0x5f08,
                label: "main.arr".into(),
                offset: 8
            }
        );
        // One past the end of an array.
        assert_eq!(
            fix_pointer(0x7f10, &o, live, stack, none),
            PointerFix::Stack {
                value: 0x5f10,
                label: "main.arr".into(),
                offset: 16
            }
        );
        // Adjacent objects: the start of the next wins over one-past-the-end of the previous.
        assert_eq!(
            fix_pointer(0x7e04, &o, live, stack, none),
            PointerFix::Stack {
                value: 0x5e20,
                label: "f.x".into(),
                offset: 0
            }
        );
        assert_eq!(
            fix_pointer(0x7e00, &o, live, stack, none),
            PointerFix::Stack {
                value: 0x5e10,
                label: "f.depth".into(),
                offset: 0
            }
        );
    }

    #[test]
    fn other_pointers() {
        let o = objs();
        let live = (0x7d00, 0x8000);
        let stack = (0x7000, 0x9000);
        assert_eq!(
            fix_pointer(0x7d80, &o, live, stack, none),
            PointerFix::UnnamedStack
        );
        assert_eq!(
            fix_pointer(0x7800, &o, live, stack, none),
            PointerFix::Dangling
        );
        assert_eq!(
            fix_pointer(0x8800, &o, live, stack, none),
            PointerFix::UnnamedStack
        );
        assert_eq!(fix_pointer(0, &o, live, stack, none), PointerFix::Unchanged);
        let sym = |v: u64| {
            (0x4c0000..0x4c0100)
                .contains(&v)
                .then(|| (v - 0x4c0000 + 0x4b0000, "g_table".to_string()))
        };
        assert_eq!(
            fix_pointer(0x4c0010, &o, live, stack, sym),
            PointerFix::Symbol {
                value: 0x4b0010,
                name: "g_table".into()
            }
        );
        assert_eq!(
            fix_pointer(0x4d0000, &o, live, stack, sym),
            PointerFix::Unchanged
        );
        assert_eq!(o.iter().count(), 3);
    }
}
