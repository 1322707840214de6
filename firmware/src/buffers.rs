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
    /// A buffer of `len` zeroed values, or `None` when its byte size does not fit the address
    /// space or the allocator cannot provide it (so a wrapped size can never produce a buffer
    /// whose length claims more than was allocated).
    pub fn try_zeroed(len: usize) -> Option<Self> {
        let bytes = len.checked_mul(core::mem::size_of::<T>())?;
        if bytes > isize::MAX as usize {
            return None;
        }
        let n_blocks = bytes.div_ceil(16);
        let mut blocks = Vec::new();
        blocks.try_reserve_exact(n_blocks).ok()?;
        blocks.resize(n_blocks, Block::default());
        Some(AlignedBuf {
            blocks,
            len,
            _t: PhantomData,
        })
    }
    /// [`AlignedBuf::try_zeroed`] for sizes the caller has already checked (the run state's
    /// small buffers, sized by [`crate::engine::RunStateSize`] before anything is allocated).
    ///
    /// # Panics
    /// When the size overflows or cannot be allocated.
    pub fn zeroed(len: usize) -> Self {
        Self::try_zeroed(len).expect("AlignedBuf: size overflows or cannot be allocated")
    }
    /// Bytes reserved, including the padding to the next 16-byte boundary.
    pub fn byte_size(&self) -> usize {
        // The blocks exist, so their byte count fits the address space.
        self.blocks.len().saturating_mul(16)
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
