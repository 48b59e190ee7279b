"""Live demo on a machine with a camera and a microphone: both drivers plus the classifier.

    ros2 launch av_snn_ros demo.launch.py
    ros2 topic echo /classification

The drivers publish ``image`` and ``audio`` in the demo's namespace, where the classifier (robot.launch.py
with config/demo.yaml) listens. Device, rate and size settings live in the params file. Without a ROS
installation use ``av-snn run --demo``; without any device, ``av-snn demo`` replays the bundled bag.
"""
from pathlib import Path

PACKAGE = 'av_snn_ros'
SHARE_DIR = Path(__file__).resolve().parent.parent
ROBOT_LAUNCH = SHARE_DIR / 'launch' / 'robot.launch.py'
DEFAULT_PARAMS_FILE = SHARE_DIR / 'config' / 'demo.yaml'


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    params_file = LaunchConfiguration('params_file')
    namespace = LaunchConfiguration('namespace')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=str(DEFAULT_PARAMS_FILE),
                              description='ROS parameter file of the drivers and the classifier'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of all three nodes'),
        Node(package=PACKAGE, executable='microphone_node', name='microphone', namespace=namespace,
             parameters=[params_file], output='screen'),
        Node(package=PACKAGE, executable='camera_node', name='camera', namespace=namespace,
             parameters=[params_file], output='screen'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(ROBOT_LAUNCH)),
            launch_arguments={'params_file': params_file, 'namespace': namespace,
                              'image_topic': 'image', 'audio_topic': 'audio', 'autostart': 'true'}.items()),
    ])
