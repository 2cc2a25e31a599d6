//! One window through the model: host frames -> one upload -> bicubic to the output grid ->
//! processor -> one download -> host frames (DESIGN §2). [`UpscaleEngine::run_to_layout`]
//! converts to the output format on the device too, and downloads only the frames' bytes.

use candle_core::{Device, Tensor};

use super::device_format::{converts_on_device, copy_planes, download_planes, rgb_to_planes};
use super::format::{rgb_to_frame, FrameLayout, RgbFrame};
use super::processor::{CancelToken, FrameProcessor, HeldState, ProcessError, WindowInput};
use super::resize::{resize_bicubic, upload};
use super::window::Window;

/// The output frame size: a scale factor of the input, or a size fixed by downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSize {
    Scale(usize),
    Fixed { width: usize, height: usize },
}

impl OutputSize {
    pub fn for_input(self, width: usize, height: usize) -> (usize, usize) {
        match self {
            OutputSize::Scale(s) => (width * s, height * s),
            OutputSize::Fixed { width, height } => (width, height),
        }
    }
}

/// Runs windows through a [`FrameProcessor`] on a device.
pub struct UpscaleEngine {
    processor: Box<dyn FrameProcessor>,
    device: Device,
    output: OutputSize,
}

impl std::fmt::Debug for UpscaleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpscaleEngine")
            .field("processor", &self.processor.name())
            .field("device", &self.device)
            .field("output", &self.output)
            .finish()
    }
}

impl UpscaleEngine {
    pub fn new(processor: Box<dyn FrameProcessor>, device: Device, output: OutputSize) -> Self {
        Self {
            processor,
            device,
            output,
        }
    }

    pub fn set_output(&mut self, output: OutputSize) {
        self.output = output;
    }

    /// Forgets the processor's per-stream state.
    pub fn reset(&mut self) {
        self.processor.reset();
    }

    /// What the processor keeps on the device between windows.
    pub fn held(&self) -> HeldState {
        self.processor.held()
    }

    /// Upscales a window; returns the frames of `window.emit`, in order.
    pub fn run<F: AsRef<RgbFrame>>(
        &mut self,
        window: &Window<F>,
        cancel: &CancelToken,
    ) -> Result<Vec<RgbFrame>, ProcessError> {
        let (out, out_w, out_h) = self.run_on_device(window, cancel)?;
        // One download: (c, e, h, w) -> (e, c, h, w) so each frame is contiguous.
        let out = out
            .permute((1, 0, 2, 3))?
            .to_dtype(candle_core::DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let alpha = self.resize_alpha(window, out_w, out_h)?;
        let out_plane = 3 * out_w * out_h;
        Ok(out
            .chunks_exact(out_plane)
            .enumerate()
            .map(|(e, rgb)| {
                let a = alpha
                    .as_ref()
                    .map(|a| a[e * out_w * out_h..(e + 1) * out_w * out_h].to_vec());
                RgbFrame::new(out_w, out_h, rgb.to_vec(), a)
            })
            .collect())
    }

    /// Upscales a window for raw frames of `layout`: on a GPU the output format is made on the
    /// device and only its bytes come back; on the CPU, and for formats with alpha (resized on
    /// the host), the host converts. The one place the output conversion is chosen.
    pub fn run_output<F: AsRef<RgbFrame>>(
        &mut self,
        window: &Window<F>,
        layout: &FrameLayout,
        cancel: &CancelToken,
    ) -> Result<OutputFrames, ProcessError> {
        if !self.device.is_cpu() && converts_on_device(layout) {
            self.run_to_layout(window, layout, cancel)
                .map(OutputFrames::Planes)
        } else {
            self.run(window, cancel).map(OutputFrames::Rgb)
        }
    }

    /// Upscales a window straight into raw frames of `layout` (the output size, a format
    /// without alpha: [`converts_on_device`]): the conversion runs on the model's device and only
    /// the frames' bytes come back. Returns, for each frame of `window.emit`, its planes tightly
    /// packed ([`super::device_format::copy_planes`] writes them into a buffer).
    pub fn run_to_layout<F: AsRef<RgbFrame>>(
        &mut self,
        window: &Window<F>,
        layout: &FrameLayout,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Vec<u8>>>, ProcessError> {
        if !converts_on_device(layout) {
            return Err(anyhow::anyhow!(
                "{} has alpha, which is converted on the host: use run",
                layout.format.name()
            )
            .into());
        }
        let (out, out_w, out_h) = self.run_on_device(window, cancel)?;
        if (out_w, out_h) != (layout.width, layout.height) {
            return Err(anyhow::anyhow!(
                "window {} is {out_w}x{out_h}, the output layout {}x{}",
                window.index,
                layout.width,
                layout.height
            )
            .into());
        }
        let planes = rgb_to_planes(&out, layout)?.ok_or_else(|| {
            anyhow::anyhow!("{} is not converted on the device", layout.format.name())
        })?;
        Ok(download_planes(&planes)?)
    }

    /// The model part of [`Self::run`]: the window uploaded once, resized to the output grid and
    /// processed; returns the emitted frames (3, e, h, w), still on the device, and their size.
    fn run_on_device<F: AsRef<RgbFrame>>(
        &mut self,
        window: &Window<F>,
        cancel: &CancelToken,
    ) -> Result<(Tensor, usize, usize), ProcessError> {
        let first = window
            .frames
            .first()
            .ok_or_else(|| anyhow::anyhow!("window {} has no frames", window.index))?
            .as_ref();
        let (w, h) = (first.width, first.height);
        if let Some((i, f)) = window
            .frames
            .iter()
            .enumerate()
            .find(|(_, f)| (f.as_ref().width, f.as_ref().height) != (w, h))
        {
            return Err(anyhow::anyhow!(
                "frame {} of window {} is {}x{}, the window started at {w}x{h}",
                i,
                window.index,
                f.as_ref().width,
                f.as_ref().height
            )
            .into());
        }
        let (out_w, out_h) = self.output.for_input(w, h);
        let padded = window.padded_len;
        // Frame i of the padded clip; padding repeats the last real frame.
        let frame = |i: usize| window.frames[i.min(window.frames.len() - 1)].as_ref();

        // (f, c, h, w) host frames -> (c, f, h, w) in one host buffer, one upload.
        let plane = w * h;
        let mut data = Vec::with_capacity(3 * padded * plane);
        for c in 0..3 {
            for i in 0..padded {
                data.extend_from_slice(&frame(i).rgb[c * plane..(c + 1) * plane]);
            }
        }
        let lr = upload(data, &[3, padded, h, w], &self.device)?;
        let hr = resize_bicubic(&lr, out_h, out_w)?;
        cancel.check()?;
        let input = WindowInput {
            index: window.index,
            frames: &hr,
            real_frames: window.frames.len(),
            emit: window.emit.clone(),
            starts_stream: window.starts_stream(),
        };
        let out = self.processor.process(&input, cancel)?;
        let n_emit = window.emit.len();
        if out.dims() != [3, n_emit, out_h, out_w] {
            return Err(anyhow::anyhow!(
                "processor {} returned a {:?} tensor for window {}, expected [3, {n_emit}, {out_h}, {out_w}]",
                self.processor.name(),
                out.dims(),
                window.index
            )
            .into());
        }
        Ok((out, out_w, out_h))
    }

    /// Bicubic-resized alpha of the emitted frames, when the frames have alpha. Alpha never
    /// goes through the model, so it is resized on the host.
    fn resize_alpha<F: AsRef<RgbFrame>>(
        &self,
        window: &Window<F>,
        out_w: usize,
        out_h: usize,
    ) -> candle_core::Result<Option<Vec<f32>>> {
        let frames = &window.frames[window.emit.clone()];
        if frames.iter().any(|f| f.as_ref().alpha.is_none()) {
            return Ok(None);
        }
        let (w, h) = (frames[0].as_ref().width, frames[0].as_ref().height);
        let data: Vec<f32> = frames
            .iter()
            .flat_map(|f| f.as_ref().alpha.iter().flatten().copied())
            .collect();
        let a = Tensor::from_vec(data, (frames.len(), h, w), &Device::Cpu)?;
        let a = resize_bicubic(&a, out_h, out_w)?.clamp(0f32, 1f32)?;
        Ok(Some(a.flatten_all()?.to_vec1::<f32>()?))
    }
}

/// The emitted frames of a window on their way to raw frames: float RGB that the host converts,
/// or the output format's planes, converted on the model's device (tightly packed, one vector
/// per plane). [`UpscaleEngine::run_output`] picks one; [`OutputFrames::write`] writes a frame.
pub enum OutputFrames {
    Rgb(Vec<RgbFrame>),
    Planes(Vec<Vec<Vec<u8>>>),
}

impl OutputFrames {
    pub fn len(&self) -> usize {
        match self {
            OutputFrames::Rgb(f) => f.len(),
            OutputFrames::Planes(f) => f.len(),
        }
    }

    /// Writes frame `k` into the mapped `planes` of an output buffer of `layout`.
    pub fn write(
        &self,
        k: usize,
        layout: &FrameLayout,
        planes: &mut [&mut [u8]],
        strides: &[usize],
    ) -> Result<(), String> {
        match self {
            OutputFrames::Rgb(f) => {
                rgb_to_frame(&f[k], layout, planes, strides).map_err(|e| e.to_string())
            }
            OutputFrames::Planes(f) => copy_planes(layout, &f[k], planes, strides),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::format::{rgb_to_frame, PixelFormat};
    use crate::pipeline::processor::BicubicProcessor;

    fn window() -> Window<Box<RgbFrame>> {
        let frames = (0..3)
            .map(|f| {
                let v = (0..3 * 5 * 3).map(|i| ((i * 11 + f * 5) % 23) as f32 / 11.0 - 1.0);
                Box::new(RgbFrame::new(5, 3, v.collect(), None))
            })
            .collect();
        Window {
            index: 0,
            start: 0,
            frames,
            padded_len: 9,
            emit: 0..3,
        }
    }

    /// The device path gives the bytes the host path gives for the same window, at an odd
    /// output size; a format with alpha or a layout of another size is an error, not a panic.
    #[test]
    fn run_to_layout_equals_run_then_the_host_conversion() {
        let mut engine = UpscaleEngine::new(
            Box::new(BicubicProcessor),
            Device::Cpu,
            OutputSize::Scale(3),
        );
        let cancel = CancelToken::default();
        for format in [PixelFormat::Nv21, PixelFormat::Y42b, PixelFormat::Xbgr] {
            let layout = FrameLayout::new(format, 15, 9);
            let rgb = engine.run(&window(), &cancel).unwrap();
            let planes = engine.run_to_layout(&window(), &layout, &cancel).unwrap();
            assert_eq!((rgb.len(), planes.len()), (3, 3));
            let strides = layout.packed_strides();
            for (frame, got) in rgb.iter().zip(&planes) {
                let mut want: Vec<Vec<u8>> = (0..format.n_planes())
                    .map(|p| vec![0u8; strides[p] * layout.plane_size(p).1])
                    .collect();
                let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|p| p.as_mut_slice()).collect();
                rgb_to_frame(frame, &layout, &mut refs, &strides).unwrap();
                assert_eq!(got, &want, "{format:?}");
            }
        }
        let mut error_for = |layout: FrameLayout| {
            let e = engine
                .run_to_layout(&window(), &layout, &cancel)
                .unwrap_err();
            format!("{e}")
        };
        let e = error_for(FrameLayout::new(PixelFormat::Rgba, 15, 9));
        assert!(e.contains("RGBA has alpha"), "{e}");
        let e = error_for(FrameLayout::new(PixelFormat::I420, 16, 9));
        assert!(e.contains("15x9, the output layout 16x9"), "{e}");
    }
}
