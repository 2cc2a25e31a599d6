//! The streaming path of DESIGN §2, without GStreamer: raw frames to float RGB, windows over the
//! stream, one window through the model, and back.

pub mod color_fix;
pub mod default_model;
pub mod device;
pub mod device_format;
pub mod diffusion;
pub mod engine;
pub mod format;
pub mod load;
pub mod model_cache;
pub mod processor;
pub mod resize;
pub mod settings;
pub mod upscaler;
pub mod window;

pub use color_fix::ColorFix;
pub use default_model::default_model_dir;
pub use device::{device_memory, explain_out_of_memory, open_cuda, select_device};
pub use diffusion::{DiffusionProcessor, WindowStats};
pub use engine::{OutputSize, UpscaleEngine};
pub use format::{frame_to_rgb, rgb_to_frame, FrameLayout, PixelFormat, RgbFrame, YuvMatrix};
pub use load::load_processor;
pub use model_cache::model_users;
pub use processor::{
    BicubicProcessor, CancelToken, FrameProcessor, HeldState, ProcessError, WindowInput,
};
pub use settings::{DeviceChoice, Precision, ProcessorSettings, SettingEnum, Settings};
pub use upscaler::Upscaler;
pub use window::{Window, WindowConfig, WindowConfigError, WindowScheduler};
