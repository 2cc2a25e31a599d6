//! Buffers: input buffers read into float RGB frames that keep their timing, and a window's
//! output frames written into new buffers with the timing of the input frames they belong to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gst_video::prelude::*;

use crate::pipeline::{frame_to_rgb, FrameLayout, OutputFrames, RgbFrame, Window};

/// Counts the input frames alive on the host (`frames-held`): each [`InFrame`] holds one count
/// from its conversion until the last window that uses it is done with it.
#[derive(Debug)]
pub(super) struct HeldFrame(Arc<AtomicU64>);

impl HeldFrame {
    pub(super) fn new(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for HeldFrame {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Timing and identity of one input frame, restored on its output frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameMeta {
    pub(super) pts: Option<gst::ClockTime>,
    pub(super) duration: Option<gst::ClockTime>,
    pub(super) offset: u64,
    pub(super) offset_end: u64,
}

#[derive(Debug)]
pub(super) struct InFrame {
    pub(super) rgb: RgbFrame,
    pub(super) meta: FrameMeta,
    pub(super) _held: HeldFrame,
}

/// A frame shared by the windows that overlap on it.
#[derive(Debug, Clone)]
pub(super) struct Frame(pub(super) Arc<InFrame>);

impl AsRef<RgbFrame> for Frame {
    fn as_ref(&self) -> &RgbFrame {
        &self.0.rgb
    }
}

/// Reads an input buffer of `info` into a [`Frame`] carrying its timing; `index` (the frame's
/// number in the stream) names it in the error.
pub(super) fn read_frame(
    buffer: &gst::Buffer,
    info: &gst_video::VideoInfo,
    layout: &FrameLayout,
    index: u64,
    held: &Arc<AtomicU64>,
) -> Result<Frame, String> {
    let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
        .map_err(|_| {
            format!(
                "Buffer of {} bytes does not hold a {}x{} {} frame",
                buffer.size(),
                info.width(),
                info.height(),
                info.format().to_str()
            )
        })?;
    let strides: Vec<usize> = vframe.plane_stride().iter().map(|s| *s as usize).collect();
    let planes: Vec<&[u8]> = (0..vframe.n_planes())
        .map(|p| vframe.plane_data(p).unwrap_or(&[]))
        .collect();
    let rgb = frame_to_rgb(layout, &planes, &strides).map_err(|e| format!("Frame {index}: {e}"))?;
    Ok(Frame(Arc::new(InFrame {
        rgb,
        meta: FrameMeta {
            pts: buffer.pts(),
            duration: buffer.duration(),
            offset: buffer.offset(),
            offset_end: buffer.offset_end(),
        },
        _held: HeldFrame::new(held),
    })))
}

/// Output buffers for the emitted frames of a window, with their input frames' timing.
pub(super) fn build_buffers(
    window: &Window<Frame>,
    out_info: &gst_video::VideoInfo,
    out_layout: &FrameLayout,
    frames: &OutputFrames,
) -> Result<Vec<gst::Buffer>, String> {
    if frames.len() != window.emit.len() {
        return Err(format!(
            "window {}: {} frames came back for {} to emit",
            window.index,
            frames.len(),
            window.emit.len()
        ));
    }
    window
        .emit
        .clone()
        .enumerate()
        .map(|(k, i)| {
            let meta = window.frames[i].0.meta;
            let mut buffer = gst::Buffer::with_size(out_info.size())
                .map_err(|e| format!("cannot allocate an output buffer: {e}"))?;
            {
                let buffer = buffer.get_mut().expect("new buffer is writable");
                buffer.set_pts(meta.pts);
                buffer.set_duration(meta.duration);
                buffer.set_offset(meta.offset);
                buffer.set_offset_end(meta.offset_end);
                let mut vframe =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, out_info)
                        .map_err(|e| format!("cannot map an output buffer: {e}"))?;
                let strides: Vec<usize> =
                    vframe.plane_stride().iter().map(|s| *s as usize).collect();
                let n_planes = vframe.n_planes() as usize;
                let mut planes: Vec<&mut [u8]> = Vec::with_capacity(n_planes);
                // Each plane borrows the frame mutably; split the borrows through raw parts.
                for p in 0..n_planes {
                    let data = vframe
                        .plane_data_mut(p as u32)
                        .map_err(|e| format!("cannot map output plane {p}: {e}"))?;
                    // SAFETY: planes of one video frame are disjoint regions of the buffer,
                    // and `vframe` outlives `planes`.
                    planes.push(unsafe {
                        std::slice::from_raw_parts_mut(data.as_mut_ptr(), data.len())
                    });
                }
                frames
                    .write(k, out_layout, &mut planes, &strides)
                    .map_err(|e| format!("frame {}: {e}", window.start + i as u64))?;
            }
            Ok(buffer)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::caps::layout_from_info;

    /// A window's output: its frames and the buffers' format.
    struct Job {
        window: Window<Frame>,
        out_info: gst_video::VideoInfo,
        out_layout: FrameLayout,
    }

    fn build(job: &Job, frames: &OutputFrames) -> Result<Vec<gst::Buffer>, String> {
        build_buffers(&job.window, &job.out_info, &job.out_layout, frames)
    }

    /// A job of two emitted frames at 5x3 (odd: GStreamer pads the strides) in `format`.
    fn job(format: gst_video::VideoFormat) -> (Job, Vec<RgbFrame>) {
        gst::init().unwrap();
        let out_info = gst_video::VideoInfo::builder(format, 5, 3).build().unwrap();
        let out_layout = layout_from_info(&out_info).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let rgb: Vec<RgbFrame> = (0..2)
            .map(|f| {
                let v = (0..45).map(|i| ((i * 7 + f * 13) % 31) as f32 / 15.0 - 1.0);
                RgbFrame::new(5, 3, v.collect(), None)
            })
            .collect();
        let frames = (0..3u64)
            .map(|i| {
                Frame(Arc::new(InFrame {
                    rgb: rgb[0].clone(),
                    meta: FrameMeta {
                        pts: Some(gst::ClockTime::from_mseconds(40 * i)),
                        duration: Some(gst::ClockTime::from_mseconds(40)),
                        offset: i,
                        offset_end: i + 1,
                    },
                    _held: HeldFrame::new(&counter),
                }))
            })
            .collect();
        let window = Window {
            index: 1,
            start: 8,
            frames,
            padded_len: 9,
            emit: 1..3,
        };
        let job = Job {
            window,
            out_info,
            out_layout,
        };
        (job, rgb)
    }

    /// The buffers from planes converted on the device equal those the host converts, with the
    /// emitted frames' timestamps; a frame count that does not match the window is an error.
    #[test]
    fn device_converted_planes_fill_the_same_buffers_as_the_host() {
        for format in [
            gst_video::VideoFormat::I420,
            gst_video::VideoFormat::Nv12,
            gst_video::VideoFormat::Rgb,
            gst_video::VideoFormat::Bgrx,
        ] {
            let (job, rgb) = job(format);
            let host = build(&job, &OutputFrames::Rgb(rgb.clone())).unwrap();
            // The device conversion on the CPU device, as the GPU runs it.
            let data: Vec<f32> = (0..3)
                .flat_map(|c| {
                    rgb.iter()
                        .flat_map(move |f| f.rgb[c * 15..(c + 1) * 15].to_vec())
                })
                .collect();
            let window =
                candle_core::Tensor::from_vec(data, (3, 2, 3, 5), &candle_core::Device::Cpu)
                    .unwrap();
            let planes = crate::pipeline::device_format::rgb_to_planes(&window, &job.out_layout)
                .unwrap()
                .unwrap();
            let planes = crate::pipeline::device_format::download_planes(&planes).unwrap();
            let device = build(&job, &OutputFrames::Planes(planes.clone())).unwrap();
            assert_eq!(host.len(), 2);
            for (k, (a, b)) in host.iter().zip(&device).enumerate() {
                // Compare plane rows only: stride padding is not written by either path.
                let frame_a =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(a, &job.out_info).unwrap();
                let frame_b =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(b, &job.out_info).unwrap();
                for p in 0..frame_a.n_planes() {
                    let row = job.out_layout.min_stride(p as usize);
                    let stride = frame_a.plane_stride()[p as usize] as usize;
                    let (da, db) = (
                        frame_a.plane_data(p).unwrap(),
                        frame_b.plane_data(p).unwrap(),
                    );
                    for y in 0..job.out_layout.plane_size(p as usize).1 {
                        assert_eq!(
                            da[y * stride..y * stride + row],
                            db[y * stride..y * stride + row],
                            "{format:?} frame {k} plane {p} row {y}"
                        );
                    }
                }
                assert_eq!(
                    b.pts(),
                    Some(gst::ClockTime::from_mseconds(40 * (k as u64 + 1)))
                );
                assert_eq!(b.offset(), k as u64 + 1);
            }
            let short = OutputFrames::Planes(planes[..1].to_vec());
            let e = build(&job, &short).unwrap_err();
            assert!(e.contains("1 frames came back for 2"), "{e}");
        }
    }
}
