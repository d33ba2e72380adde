//! Reading a database file: decompressed within a bound on what the
//! content may grow to, so a gzip bomb is refused rather than an abort,
//! then decoded (`format.rs`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::format::decode;
use super::{DbError, Loaded};

/// Reads the database at `path`; `Ok(None)` if there is no file.
///
/// What it holds in memory is bounded by the file: as it is read, the
/// content may grow to at most [`MAX_RATIO`] times the compressed bytes
/// read so far, plus [`RATIO_FLOOR`], which a real database never
/// approaches; and the records are kept as they are parsed, never
/// reserved ahead by a count of lines. A few hundred KB of gzipped
/// newlines (a poisoned file or S3 copy) would decompress to gigabytes:
/// refused as "cannot be read" after at most the floor, not an abort.
pub fn load(path: &Path) -> Result<Option<Loaded>, DbError> {
    let io = |source| DbError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut data = read_content(file, RATIO_FLOOR, path)?;
    decode(&mut data, path).map(Some)
}

/// Decompresses `file` whole, refusing it once its content outgrows
/// [`MAX_RATIO`] times the compressed bytes read plus `floor`.
pub(super) fn read_content(file: File, floor: u64, path: &Path) -> Result<Vec<u8>, DbError> {
    let io = |source| DbError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = Vec::new();
    // Only a hint: without the room, the buffer grows as it is filled.
    let _ = data.try_reserve_exact(uncompressed_size_hint(&file));
    let mut gz = MultiGzDecoder::new(std::io::BufReader::with_capacity(
        1 << 16,
        Counted { file, read: 0 },
    ));
    let allowed = |gz: &MultiGzDecoder<_>| {
        compressed_read(gz)
            .saturating_mul(MAX_RATIO)
            .saturating_add(floor)
    };
    loop {
        let budget = allowed(&gz).saturating_sub(data.len() as u64);
        let got = (&mut gz)
            .take(budget.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(io)? as u64;
        if got <= budget {
            return Ok(data); // the end, within the allowance
        }
        // Over what was allowed when the read began: the allowance has
        // grown with what the read consumed, or the file is a bomb.
        if data.len() as u64 > allowed(&gz) {
            return Err(DbError::TooBig {
                path: path.to_path_buf(),
                read: compressed_read(&gz),
                content: data.len() as u64,
            });
        }
    }
}

/// The file under a decoder, counting the compressed bytes it gives.
struct Counted {
    file: File,
    read: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Compressed bytes the decoder has taken from the file.
fn compressed_read(gz: &MultiGzDecoder<std::io::BufReader<Counted>>) -> u64 {
    gz.get_ref().get_ref().read
}

/// Most that a database's content may be larger than its file. Deflate
/// can expand 1032-fold; lovebeat's records compress 80 to 140-fold when
/// every service has the same 100 intervals (measured, gzip levels 1 and
/// 6), and a file of identical records recompressed with `gzip -9`
/// reaches about 290. 400 leaves room above that and still refuses a file
/// of newlines or other filler (over 1 000-fold).
pub const MAX_RATIO: u64 = 400;

/// Content allowed whatever the ratio, so that a small database, or the
/// start of one, is never refused for its ratio (64 MiB).
pub const RATIO_FLOOR: u64 = 64 << 20;

/// Most that deflate can expand its input (a stream of maximal matches).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The size of a gzip file's content as its trailer states it (modulo
/// 4 GiB, and of the last member only), so the buffer it is read into
/// need not be regrown and copied a dozen times. Only a hint: 0 when the
/// file is too short or cannot be read, and never more than the file
/// could expand to nor than [`load`] allows, so that a truncated or
/// corrupt file, whose last four bytes are not a size, cannot ask for
/// gigabytes.
pub(super) fn uncompressed_size_hint(file: &File) -> usize {
    use std::os::unix::fs::FileExt;
    let Ok(meta) = file.metadata() else {
        return 0;
    };
    let mut trailer = [0u8; 4];
    if meta.len() < 18 || file.read_exact_at(&mut trailer, meta.len() - 4).is_err() {
        return 0;
    }
    let stated = u64::from(u32::from_le_bytes(trailer));
    let most = meta.len().saturating_mul(MAX_DEFLATE_RATIO).min(
        meta.len()
            .saturating_mul(MAX_RATIO)
            .saturating_add(RATIO_FLOOR),
    );
    usize::try_from(stated.min(most)).unwrap_or(0)
}
