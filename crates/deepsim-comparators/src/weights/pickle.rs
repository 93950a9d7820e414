//! A restricted pickle reader for PyTorch checkpoints: it builds values, never executes code.
//!
//! Only the opcodes that `torch.save` emits (protocols 2 to 4) are understood, and only the
//! globals on [`ALLOWED_GLOBALS`] may be named; anything else is an error naming the opcode or
//! the global. Objects live in an arena and are referred to by index, so memo references cost
//! nothing and no input can make the reader allocate more than a small multiple of its length.

use std::collections::HashMap;

/// The globals a checkpoint may name: tensor and parameter rebuilders, `OrderedDict` and the
/// typed storage classes.
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// Element type of a storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    /// `torch.float32`.
    F32,
    /// `torch.float64`.
    F64,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.int64`.
    I64,
    /// `torch.int32`.
    I32,
    /// `torch.int16`.
    I16,
    /// `torch.int8`.
    I8,
    /// `torch.uint8`.
    U8,
    /// `torch.bool`.
    Bool,
}

impl StorageDtype {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A storage named by a persistent id: its key in the file, element type and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    /// Key of the raw storage (a file in the zip format, a position in the legacy format).
    pub key: String,
    /// Element type.
    pub dtype: StorageDtype,
    /// Elements, as the persistent id states.
    pub numel: u64,
}

/// A tensor as a checkpoint describes it: a strided view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage holding the elements.
    pub storage: StorageRef,
    /// First element, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// Index of an object in the arena.
pub type Id = usize;

/// A value built by the reader.
#[derive(Clone, Debug)]
pub enum Object {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (at most 16 bytes wide).
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict (or `OrderedDict`), in insertion order.
    Dict(Vec<(Id, Id)>),
    /// An allowed global, `module.name`.
    Global(&'static str, &'static str),
    /// A storage from a persistent id.
    Storage(StorageRef),
    /// A tensor rebuilt by `_rebuild_tensor_v2`.
    Tensor(TensorRef),
}

/// The objects of one pickle and the index of its result.
#[derive(Debug)]
pub struct Pickle {
    /// Every object built, referred to by [`Id`].
    pub objects: Vec<Object>,
    /// The pickle's result.
    pub root: Id,
    /// Bytes consumed, up to and including STOP.
    pub len: usize,
}

impl Pickle {
    /// The object `id`.
    pub fn get(&self, id: Id) -> &Object {
        &self.objects[id]
    }
}

/// Marks on the stack (MARK) are kept apart from objects.
#[derive(Clone, Copy)]
enum Slot {
    Obj(Id),
    Mark,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    objects: Vec<Object>,
    stack: Vec<Slot>,
    memo: HashMap<u32, Id>,
}

/// Reads one pickle from the start of `data`.
///
/// # Errors
/// A truncated pickle, an unknown or unsupported opcode, a global not on [`ALLOWED_GLOBALS`],
/// a malformed persistent id or tensor, or a stack in an impossible state: the message names
/// the opcode and its byte offset.
pub fn read(data: &[u8]) -> Result<Pickle, String> {
    let mut m =
        Machine { data, pos: 0, objects: Vec::new(), stack: Vec::new(), memo: HashMap::new() };
    loop {
        let at = m.pos;
        let op = m.byte()?;
        match m.step(op) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("pickle opcode 0x{op:02x} at byte {at}: {e}")),
        }
    }
    let root = match m.stack.as_slice() {
        [Slot::Obj(id)] => *id,
        _ => {
            return Err(format!(
                "pickle ended with {} items on its stack, expected 1",
                m.stack.len()
            ))
        }
    };
    Ok(Pickle { objects: m.objects, root, len: m.pos })
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| {
            format!(
                "truncated: needs {n} bytes at offset {}, {} left",
                self.pos,
                self.data.len() - self.pos
            )
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A newline-terminated line (GLOBAL's module and name).
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("truncated: unterminated line")?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| "line is not UTF-8")?.to_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".to_owned())
    }

    fn len_u64(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "length does not fit in memory".to_owned())
    }

    fn push(&mut self, o: Object) {
        self.objects.push(o);
        self.stack.push(Slot::Obj(self.objects.len() - 1));
    }

    fn pop(&mut self) -> Result<Id, String> {
        match self.stack.pop() {
            Some(Slot::Obj(id)) => Ok(id),
            Some(Slot::Mark) => Err("expected an object, found a mark".into()),
            None => Err("stack underflow".into()),
        }
    }

    fn top(&self) -> Result<Id, String> {
        match self.stack.last() {
            Some(Slot::Obj(id)) => Ok(*id),
            Some(Slot::Mark) => Err("expected an object, found a mark".into()),
            None => Err("stack underflow".into()),
        }
    }

    /// The objects above the topmost mark, which is removed.
    fn pop_to_mark(&mut self) -> Result<Vec<Id>, String> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or("no mark on the stack")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Obj(id) => id,
                Slot::Mark => unreachable!("the topmost mark is below these"),
            })
            .collect())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let id = *self.memo.get(&key).ok_or_else(|| format!("memo key {key} was never stored"))?;
        self.stack.push(Slot::Obj(id));
        Ok(())
    }

    fn tuple(&mut self, items: Vec<Id>) {
        self.push(Object::Tuple(items));
    }

    fn extend_dict(&mut self, dict: Id, items: &[Id]) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of items for a dict".into());
        }
        match &mut self.objects[dict] {
            Object::Dict(d) => {
                d.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            other => Err(format!("set items on a {}", kind(other))),
        }
    }

    fn extend_list(&mut self, list: Id, items: &[Id]) -> Result<(), String> {
        match &mut self.objects[list] {
            Object::List(l) => {
                l.extend_from_slice(items);
                Ok(())
            }
            other => Err(format!("append to a {}", kind(other))),
        }
    }

    /// Executes one opcode; `Ok(true)` at STOP.
    fn step(&mut self, op: u8) -> Result<bool, String> {
        match op {
            0x80 => {
                // PROTO
                let p = self.byte()?;
                if p > 5 {
                    return Err(format!("pickle protocol {p} is not supported"));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                self.u64()?;
            }
            b'.' => return Ok(true),
            b'(' => self.stack.push(Slot::Mark),
            b'N' => self.push(Object::None),
            0x88 => self.push(Object::Bool(true)),
            0x89 => self.push(Object::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                self.push(Object::Int(v.into()));
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Object::Int(v.into()));
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Object::Int(v.into()));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = self.byte()? as usize;
                let bytes = self.take(n)?;
                if n > 16 {
                    return Err(format!("integer of {n} bytes is too large"));
                }
                let mut buf =
                    if bytes.last().is_some_and(|&b| b & 0x80 != 0) { [0xff; 16] } else { [0; 16] };
                buf[..n].copy_from_slice(bytes);
                self.push(Object::Int(i128::from_le_bytes(buf)));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                self.push(Object::Float(v));
            }
            b'X' => {
                let n = self.u32()? as usize;
                let s = self.text(n)?;
                self.push(Object::Str(s));
            }
            0x8c => {
                let n = self.byte()? as usize;
                let s = self.text(n)?;
                self.push(Object::Str(s));
            }
            0x8d => {
                let n = self.len_u64()?;
                let s = self.text(n)?;
                self.push(Object::Str(s));
            }
            b'U' => {
                // SHORT_BINSTRING (protocol 2 writes str keys of Python 2 this way): bytes as text.
                let n = self.byte()? as usize;
                let s = self.text(n)?;
                self.push(Object::Str(s));
            }
            b'T' => {
                let n = self.u32()? as usize;
                let s = self.text(n)?;
                self.push(Object::Str(s));
            }
            b'C' => {
                let n = self.byte()? as usize;
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b));
            }
            b'B' => {
                let n = self.u32()? as usize;
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b));
            }
            b'}' => self.push(Object::Dict(Vec::new())),
            b']' => self.push(Object::List(Vec::new())),
            b')' => self.tuple(Vec::new()),
            b'd' => {
                let items = self.pop_to_mark()?;
                self.push(Object::Dict(Vec::new()));
                let dict = self.top()?;
                self.extend_dict(dict, &items)?;
            }
            b'l' => {
                let items = self.pop_to_mark()?;
                self.push(Object::List(items));
            }
            b't' => {
                let items = self.pop_to_mark()?;
                self.tuple(items);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err("stack underflow".into());
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.tuple(items);
            }
            b'q' => {
                let k = self.byte()?;
                self.memo_put(k.into())?;
            }
            b'r' => {
                let k = self.u32()?;
                self.memo_put(k)?;
            }
            0x94 => {
                // MEMOIZE
                let k = self.memo.len() as u32;
                self.memo_put(k)?;
            }
            b'h' => {
                let k = self.byte()?;
                self.memo_get(k.into())?;
            }
            b'j' => {
                let k = self.u32()?;
                self.memo_get(k)?;
            }
            b'0' => {
                self.stack.pop().ok_or("stack underflow")?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(Slot::Obj(top));
            }
            b'u' => {
                let items = self.pop_to_mark()?;
                let dict = self.top()?;
                self.extend_dict(dict, &items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let dict = self.top()?;
                self.extend_dict(dict, &[k, v])?;
            }
            b'e' => {
                let items = self.pop_to_mark()?;
                let list = self.top()?;
                self.extend_list(list, &items)?;
            }
            b'a' => {
                let v = self.pop()?;
                let list = self.top()?;
                self.extend_list(list, &[v])?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(&module, &name)?;
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                match (&self.objects[module], &self.objects[name]) {
                    (Object::Str(m), Object::Str(n)) => {
                        let (m, n) = (m.clone(), n.clone());
                        self.global(&m, &n)?;
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'Q' => {
                // BINPERSID
                let pid = self.pop()?;
                let storage = self.persistent(pid)?;
                self.push(Object::Storage(storage));
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.reduce(callable, args)?;
                self.push(result);
            }
            b'b' => {
                // BUILD: state for an OrderedDict (its `_metadata`) is dropped; nothing else
                // takes state.
                let _state = self.pop()?;
                let obj = self.top()?;
                if !matches!(self.objects[obj], Object::Dict(_)) {
                    return Err(format!("BUILD on a {}", kind(&self.objects[obj])));
                }
            }
            _ => return Err("unsupported opcode".into()),
        }
        Ok(false)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let allowed = ALLOWED_GLOBALS.iter().find(|(m, n)| *m == module && *n == name);
        let &(m, n) = allowed.ok_or_else(|| {
            format!("global `{module}.{name}` is not allowed (only tensor rebuilders, OrderedDict and storage types)")
        })?;
        self.push(Object::Global(m, n));
        Ok(())
    }

    fn items(&self, id: Id) -> Option<&[Id]> {
        match &self.objects[id] {
            Object::Tuple(v) | Object::List(v) => Some(v),
            _ => None,
        }
    }

    fn int(&self, id: Id, what: &str) -> Result<i128, String> {
        match self.objects[id] {
            Object::Int(v) => Ok(v),
            ref other => Err(format!("{what}: expected an integer, found a {}", kind(other))),
        }
    }

    fn usize_tuple(&self, id: Id, what: &str) -> Result<Vec<usize>, String> {
        let items = self.items(id).ok_or_else(|| format!("{what}: expected a tuple"))?;
        items
            .iter()
            .map(|&i| {
                let v = self.int(i, what)?;
                usize::try_from(v).map_err(|_| format!("{what}: {v} is not a valid size"))
            })
            .collect()
    }

    /// `('storage', storage_class, key, location, numel[, view_metadata])`.
    fn persistent(&self, pid: Id) -> Result<StorageRef, String> {
        let items = self.items(pid).ok_or("persistent id is not a tuple")?;
        let [tag, class, key, _location, numel, rest @ ..] = items else {
            return Err(format!("persistent id has {} fields, expected 5 or 6", items.len()));
        };
        if !matches!(&self.objects[*tag], Object::Str(s) if s == "storage") {
            return Err("persistent id is not a storage".into());
        }
        let dtype = match self.objects[*class] {
            Object::Global("torch", name) => StorageDtype::from_storage_class(name),
            _ => None,
        }
        .ok_or("persistent id: storage type is not a torch storage class")?;
        let key = match &self.objects[*key] {
            Object::Str(s) => s.clone(),
            _ => return Err("persistent id: storage key is not a string".into()),
        };
        let numel = self.int(*numel, "storage size")?;
        let numel =
            u64::try_from(numel).map_err(|_| format!("storage size {numel} is negative"))?;
        if let Some(view) = rest.first() {
            if !matches!(self.objects[*view], Object::None) {
                return Err("storage views (legacy view metadata) are not supported".into());
            }
        }
        Ok(StorageRef { key, dtype, numel })
    }

    fn reduce(&mut self, callable: Id, args: Id) -> Result<Object, String> {
        let Object::Global(module, name) = self.objects[callable] else {
            return Err(format!("REDUCE on a {}", kind(&self.objects[callable])));
        };
        let args = self.items(args).ok_or("REDUCE arguments are not a tuple")?.to_vec();
        match (module, name) {
            ("collections", "OrderedDict") => {
                let mut dict = Vec::new();
                if let Some(&pairs) = args.first() {
                    for &pair in self.items(pairs).ok_or("OrderedDict argument is not a list")? {
                        match self.items(pair) {
                            Some(&[k, v]) => dict.push((k, v)),
                            _ => return Err("OrderedDict item is not a pair".into()),
                        }
                    }
                }
                Ok(Object::Dict(dict))
            }
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                let [storage, offset, shape, stride, ..] = args[..] else {
                    return Err(format!("{name} needs at least 4 arguments, got {}", args.len()));
                };
                let Object::Storage(storage) = &self.objects[storage] else {
                    return Err(format!("{name}: first argument is not a storage"));
                };
                let offset = self.int(offset, "storage offset")?;
                let offset = u64::try_from(offset)
                    .map_err(|_| format!("storage offset {offset} is negative"))?;
                let shape = self.usize_tuple(shape, "tensor shape")?;
                let stride = self.usize_tuple(stride, "tensor stride")?;
                if shape.len() != stride.len() {
                    return Err(format!(
                        "tensor of rank {} has {} strides",
                        shape.len(),
                        stride.len()
                    ));
                }
                Ok(Object::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
            }
            ("torch._utils", "_rebuild_parameter") => match args.first().map(|&a| &self.objects[a])
            {
                Some(Object::Tensor(t)) => Ok(Object::Tensor(t.clone())),
                _ => Err("_rebuild_parameter: first argument is not a tensor".into()),
            },
            _ => Err(format!("`{module}.{name}` cannot be called")),
        }
    }
}

/// A word for an object's type, for error messages.
pub fn kind(o: &Object) -> &'static str {
    match o {
        Object::None => "None",
        Object::Bool(_) => "bool",
        Object::Int(_) => "int",
        Object::Float(_) => "float",
        Object::Str(_) => "str",
        Object::Bytes(_) => "bytes",
        Object::Tuple(_) => "tuple",
        Object::List(_) => "list",
        Object::Dict(_) => "dict",
        Object::Global(..) => "global",
        Object::Storage(_) => "storage",
        Object::Tensor(_) => "tensor",
    }
}
