//! 16-byte-aligned buffers for the run state: PIE vector loads ignore the low four address
//! bits, so every buffer a kernel reads must start on a 16-byte boundary.

use alloc::vec::Vec;
use core::marker::PhantomData;

#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Block([u8; 16]);

/// Plain-old-data element types an [`AlignedBuf`] may hold (every bit pattern valid).
///
/// # Safety
/// Implementors must be `Copy`, have no padding and accept every bit pattern, with an
/// alignment of at most 16.
pub unsafe trait Pod: Copy + Default {}
unsafe impl Pod for f32 {}
unsafe impl Pod for i8 {}
unsafe impl Pod for u16 {}

/// A zero-initialised, fixed-length, 16-byte-aligned array of `T`, allocated once.
pub struct AlignedBuf<T: Pod> {
    blocks: Vec<Block>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> AlignedBuf<T> {
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * core::mem::size_of::<T>();
        AlignedBuf {
            blocks: alloc::vec![Block::default(); bytes.div_ceil(16)],
            len,
            _t: PhantomData,
        }
    }
    /// Bytes reserved, including the padding to the next 16-byte boundary.
    pub fn byte_size(&self) -> usize {
        self.blocks.len() * 16
    }
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the blocks hold at least len·size_of::<T>() initialised bytes, aligned to 16
        // ≥ align_of::<T>(), and T accepts every bit pattern (Pod).
        unsafe { core::slice::from_raw_parts(self.blocks.as_ptr().cast::<T>(), self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with unique access through &mut self.
        unsafe { core::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Pod> core::ops::Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}
impl<T: Pod> core::ops::DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}
