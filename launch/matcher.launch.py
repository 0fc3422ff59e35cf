"""Launch distillmatch_ros/matcher_node: visible/thermal matching, alignment and fusion.

    ros2 launch distillmatch_ros matcher.launch.py namespace:=rig \
        visible_topic:=/camera/color/image_raw thermal_topic:=/boson/image_raw backend:=tensorrt

Parameters come from params_file (default: the package's config/matcher.yaml); ``model``,
``backend`` and the cameras' transports (``raw`` or ``compressed``) given here override it.
Unless fastdds_profile is empty, the node runs with the package's Fast DDS shared-memory profile
(large images over best-effort UDP get lost); start the camera drivers with the same
FASTDDS_DEFAULT_PROFILES_FILE (see README).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description():
    share = get_package_share_directory("distillmatch_ros")
    profile = LaunchConfiguration("fastdds_profile")
    args = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "matcher.yaml"),
                              description="YAML file with the node's parameters"),
        DeclareLaunchArgument("model", default_value="",
                              description="Checkpoint (.pt) or shipped model name; empty = shipped default"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="auto, torch, onnxruntime or tensorrt"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("visible_topic", default_value="visible/image_raw",
                              description="Visible camera image topic"),
        DeclareLaunchArgument("thermal_topic", default_value="thermal/image_raw",
                              description="Thermal camera image topic"),
        DeclareLaunchArgument("visible_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed (CompressedImage on "
                              "<visible_topic>/compressed, image_transport's compressed plugin)"),
        DeclareLaunchArgument("thermal_transport", default_value="raw",
                              description="raw or compressed (PNG keeps 16-bit counts)"),
        DeclareLaunchArgument("visible_info_topic", default_value="visible/camera_info",
                              description="Visible camera_info topic (used when use_camera_info is true)"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS profile for the node; empty = the middleware default"),
    ]
    use_profile = IfCondition(PythonExpression(["'", profile, "' != ''"]))
    node = Node(
        package="distillmatch_ros",
        executable="matcher_node",
        name="matcher_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {"model": LaunchConfiguration("model"), "backend": LaunchConfiguration("backend"),
                     "visible_transport": LaunchConfiguration("visible_transport"),
                     "thermal_transport": LaunchConfiguration("thermal_transport")}],
        remappings=[
            ("visible/image_raw", LaunchConfiguration("visible_topic")),
            ("thermal/image_raw", LaunchConfiguration("thermal_topic")),
            ("visible/camera_info", LaunchConfiguration("visible_info_topic")),
        ],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(args + [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile, condition=use_profile),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile, condition=use_profile),
        node,
    ])
