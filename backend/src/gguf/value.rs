//! GGUF metadata values: the 13 value types, including (nested) arrays.

use std::fmt;

/// Type tag of a metadata value, with its GGUF id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type for a GGUF value type id, if it is one of the 13.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The GGUF id of this type.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Fewest bytes one value of this type can take in a file; bounds array pre-allocation.
    pub(crate) fn min_encoded_len(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,    // u64 length
            Array => 4 + 8, // u32 item type + u64 count
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Items all of the given type (arrays of arrays may differ in their own item types).
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

macro_rules! exact_accessor {
    ($name:ident, $variant:ident, $t:ty) => {
        #[doc = concat!("The value if it is exactly `", stringify!($variant), "`.")]
        pub fn $name(&self) -> Option<$t> {
            match self {
                Value::$variant(v) => Some(*v),
                _ => None,
            }
        }
    };
}

impl Value {
    /// The type tag of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    exact_accessor!(as_u8, U8, u8);
    exact_accessor!(as_i8, I8, i8);
    exact_accessor!(as_u16, U16, u16);
    exact_accessor!(as_i16, I16, i16);
    exact_accessor!(as_u32, U32, u32);
    exact_accessor!(as_i32, I32, i32);
    exact_accessor!(as_u64, U64, u64);
    exact_accessor!(as_i64, I64, i64);
    exact_accessor!(as_f32, F32, f32);
    exact_accessor!(as_f64, F64, f64);
    exact_accessor!(as_bool, Bool, bool);

    /// The string if this is a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items if this is an `Array`.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// The declared item type if this is an `Array`.
    pub fn array_type(&self) -> Option<ValueType> {
        match self {
            Value::Array(t, _) => Some(*t),
            _ => None,
        }
    }

    /// Any integer type, if it is non-negative (every unsigned value converts exactly).
    pub fn to_u64_lossless(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in i64.
    pub fn to_i64_lossless(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.to_u64_lossless().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any integer type whose value fits in u32.
    pub fn to_u32_lossless(&self) -> Option<u32> {
        self.to_u64_lossless().and_then(|v| u32::try_from(v).ok())
    }

    /// F32, F64, or an integer of magnitude at most 2^53 (all exactly representable).
    pub fn to_f64_lossless(&self) -> Option<f64> {
        const EXACT: i64 = 1 << 53;
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self
                .to_i64_lossless()
                .filter(|v| (-EXACT..=EXACT).contains(v))
                .map(|v| v as f64),
        }
    }

    /// F32, an F64 that f32 holds exactly (NaN included), or an integer of magnitude at
    /// most 2^24.
    pub fn to_f32_lossless(&self) -> Option<f32> {
        const EXACT: i64 = 1 << 24;
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => {
                let f = v as f32;
                (f as f64 == v || v.is_nan()).then_some(f)
            }
            _ => self
                .to_i64_lossless()
                .filter(|v| (-EXACT..=EXACT).contains(v))
                .map(|v| v as f32),
        }
    }

    /// An array of strings (type `String`) built from any string-like items.
    pub fn string_array<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(
            ValueType::String,
            items.into_iter().map(|s| Value::String(s.into())).collect(),
        )
    }

    /// An array of the given scalar items; the item type comes from `T`.
    pub fn array<T: Into<Value> + ScalarType>(items: impl IntoIterator<Item = T>) -> Value {
        Value::Array(T::VALUE_TYPE, items.into_iter().map(Into::into).collect())
    }
}

/// Rust scalar types with a fixed GGUF value type (used by [`Value::array`]).
pub trait ScalarType {
    const VALUE_TYPE: ValueType;
}

macro_rules! scalar {
    ($t:ty, $variant:ident) => {
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        }
        impl ScalarType for $t {
            const VALUE_TYPE: ValueType = ValueType::$variant;
        }
    };
}

scalar!(u8, U8);
scalar!(i8, I8);
scalar!(u16, U16);
scalar!(i16, I16);
scalar!(u32, U32);
scalar!(i32, I32);
scalar!(u64, U64);
scalar!(i64, I64);
scalar!(f32, F32);
scalar!(f64, F64);
scalar!(bool, Bool);
scalar!(String, String);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_string())
    }
}

impl ScalarType for &str {
    const VALUE_TYPE: ValueType = ValueType::String;
}

/// Human-readable form for listings: arrays show their first few items and their length.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(t, items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > SHOWN {
                    write!(f, ", ...")?;
                }
                write!(f, "] ({} x {t:?})", items.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_conversions() {
        assert_eq!(Value::I32(7).to_u32_lossless(), Some(7));
        assert_eq!(Value::I32(-7).to_u32_lossless(), None);
        assert_eq!(Value::U64(1 << 40).to_u32_lossless(), None);
        assert_eq!(Value::U64(u64::MAX).to_i64_lossless(), None);
        assert_eq!(Value::F32(1.5).to_u64_lossless(), None);
        assert_eq!(Value::F64(0.5).to_f32_lossless(), Some(0.5));
        assert_eq!(Value::F64(1e-5).to_f32_lossless(), None);
        assert_eq!(Value::U32(1 << 24).to_f32_lossless(), Some(16_777_216.0));
        assert_eq!(Value::U32((1 << 24) + 1).to_f32_lossless(), None);
        assert_eq!(
            Value::I64(-(1 << 53)).to_f64_lossless(),
            Some(-(2f64.powi(53)))
        );
        assert_eq!(Value::String("x".into()).to_f64_lossless(), None);
    }

    #[test]
    fn accessors_are_exact() {
        assert_eq!(Value::U32(3).as_u32(), Some(3));
        assert_eq!(Value::U32(3).as_u64(), None);
        assert_eq!(Value::from("a").as_str(), Some("a"));
        let a = Value::array([1u16, 2]);
        assert_eq!(a.array_type(), Some(ValueType::U16));
        assert_eq!(a.as_array().unwrap()[1], Value::U16(2));
    }

    #[test]
    fn value_type_ids_round_trip() {
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn display_truncates_arrays() {
        let v = Value::array(0u32..20);
        assert_eq!(v.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, ...] (20 x U32)");
        assert_eq!(Value::from("a\"b").to_string(), "\"a\\\"b\"");
    }
}
