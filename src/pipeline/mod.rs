//! The streaming path of DESIGN §2, without GStreamer: raw frames to float RGB, windows over the
//! stream, one window through the model, and back.

pub(crate) mod color_fix;
pub(crate) mod default_model;
pub(crate) mod device;
pub(crate) mod device_format;
pub(crate) mod diffusion;
pub(crate) mod engine;
pub(crate) mod format;
pub(crate) mod load;
pub(crate) mod model_cache;
pub(crate) mod processor;
pub(crate) mod resize;
pub mod settings;
pub(crate) mod upscaler;
pub mod window;

pub use default_model::default_model_dir;
pub use diffusion::{DiffusionProcessor, WindowStats};
pub use engine::OutputSize;
pub(crate) use engine::{OutputFrames, UpscaleEngine};
pub use format::{frame_to_rgb, rgb_to_frame, FrameLayout, PixelFormat, RgbFrame, YuvMatrix};
pub use load::load_processor;
pub use model_cache::model_users;
pub use processor::{
    BicubicProcessor, CancelToken, FrameProcessor, HeldState, ProcessError, WindowInput,
};
pub use resize::resize_bicubic;
pub use settings::{ColorFix, DeviceChoice, Precision, ProcessorSettings, SettingEnum, Settings};
pub use upscaler::Upscaler;
pub(crate) use window::Window;
pub use window::{WindowConfig, WindowConfigError};
