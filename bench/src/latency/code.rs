//! The frame code of `bench latency`: a 16-bit number and its complement drawn as 32 black or
//! white luma blocks in two rows of 20 at the top of a frame, read back by averaging the centre
//! of each block (so scaling, chroma subsampling and coding noise do not flip a bit). The block
//! size follows the picture width (32 px at 640, 16 px at 320: whole VP8 macroblocks), so a
//! frame a sender scaled down still reads. The browser side reads the same code from a canvas
//! (tests/browser/bench-latency.mjs `readCode`): keep the two in step.

use std::io::Write;
use std::path::Path;

/// Blocks per row.
pub const COLUMNS: usize = 20;
/// Bits in the code: 16 of the number, 16 of its complement (a misread shows as a mismatch).
const BITS: usize = 32;
/// Luma of a set / unset bit (video range).
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// The side of one block in a picture `width` pixels wide.
fn block_size(width: usize) -> usize {
    width / COLUMNS
}

/// The top-left pixel of bit `i`'s block.
fn block_origin(i: usize, block: usize) -> (usize, usize) {
    ((i % COLUMNS) * block, (i / COLUMNS) * block)
}

/// Draws `number` into the luma plane of a picture `width` pixels wide.
pub fn draw(luma: &mut [u8], stride: usize, width: usize, number: u16) {
    let block = block_size(width);
    let code = (number as u32) << 16 | (!number) as u32;
    for i in 0..BITS {
        let value = if code >> (BITS - 1 - i) & 1 == 1 {
            WHITE
        } else {
            BLACK
        };
        let (x0, y0) = block_origin(i, block);
        for y in y0..y0 + block {
            let start = y * stride + x0;
            luma[start..start + block].fill(value);
        }
    }
}

/// Reads the code of a picture `width` pixels wide; `None` when the complement disagrees (a
/// frame without a code, or a misread).
pub fn read(luma: &[u8], stride: usize, width: usize) -> Option<u16> {
    let block = block_size(width);
    if block < 4 {
        return None;
    }
    let (inset, side) = (block / 4, block / 2);
    let mut code = 0u32;
    for i in 0..BITS {
        let (x0, y0) = block_origin(i, block);
        let (x0, y0) = (x0 + inset, y0 + inset);
        let mut sum = 0u32;
        for y in y0..y0 + side {
            let start = y * stride + x0;
            sum += luma
                .get(start..start + side)?
                .iter()
                .map(|&v| v as u32)
                .sum::<u32>();
        }
        let mean = sum / (side * side) as u32;
        code = code << 1 | u32::from(mean > 128);
    }
    let (number, check) = ((code >> 16) as u16, code as u16);
    (number == !check).then_some(number)
}

/// Writes a Y4M file (I420) of `frames` frames for Chromium's
/// `--use-file-for-fake-video-capture`: frame `n` carries code `n`, over a grey gradient that
/// moves a little each frame (something to encode besides the code). Chromium plays it at
/// `fps` and loops it.
pub fn write_y4m(
    path: &Path,
    width: usize,
    height: usize,
    fps: u32,
    frames: u16,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg"
    )?;
    let chroma = vec![128u8; 2 * (width / 2) * (height / 2)];
    let mut luma = vec![0u8; width * height];
    for n in 0..frames {
        for (y, row) in luma.chunks_mut(width).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = 40 + ((x + y + 4 * n as usize) % 160) as u8;
            }
        }
        draw(&mut luma, width, width, n);
        out.write_all(b"FRAME\n")?;
        out.write_all(&luma)?;
        out.write_all(&chroma)?;
    }
    out.flush()
}

/// Milliseconds since the Unix epoch: the one clock every process and page on this host shares
/// (a browser page's `performance.timeOrigin + performance.now()`).
pub fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_round_trip_at_two_widths() {
        for width in [640, 320] {
            let mut luma = vec![128u8; width * 480];
            for n in [0u16, 1, 0x1234, 0xffff] {
                draw(&mut luma, width, width, n);
                assert_eq!(read(&luma, width, width), Some(n), "width {width}");
            }
            luma[..width * 64].fill(128);
            assert_eq!(read(&luma, width, width), None);
        }
    }

    #[test]
    fn y4m_frames_carry_their_index() {
        let path = std::env::temp_dir().join(format!("code-{}.y4m", std::process::id()));
        write_y4m(&path, 320, 240, 30, 3).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let header = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        let frame = 6 + 320 * 240 * 3 / 2;
        assert_eq!(bytes.len(), header + 3 * frame);
        for n in 0..3 {
            let luma = &bytes[header + n * frame + 6..][..320 * 240];
            assert_eq!(read(luma, 320, 320), Some(n as u16));
        }
    }
}
